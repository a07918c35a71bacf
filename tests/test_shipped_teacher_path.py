"A shipped teacher built with zoo options (resnet34_w8) on the user's own path: DataBlock image folder, distil, export -> predict"
import tempfile
from pathlib import Path
import torch
from fastai.learner import load_learner
from fastai.vision.all import Learner, CrossEntropyLossFlat, accuracy, get_image_files
import kd_fastai.core.registry  # noqa: F401 (Learner.distill)
from kd_fastai.models.zoo import zoo_model, count_parameters
from kd_fastai.models.pretrained import pretrained_teacher
from kd_fastai.test_utils import write_png_folder, folder_dls


def test_shipped_resnet34_w8_distils_on_a_datablock():
    t = pretrained_teacher('resnet34_w8')
    before = {k: v.clone() for k, v in t.state_dict().items()}
    d = write_png_folder(tempfile.mkdtemp(), n_train=2, n_valid=1, n_classes=10, size=28)
    learn = Learner(folder_dls(d, bs=8, device='cpu'), zoo_model('model_25k_wo_dw', in_channels=1, num_classes=10),
                    loss_func=CrossEntropyLossFlat(), metrics=accuracy)
    with learn.no_bar(), learn.no_logging(): learn.distill(t, 1, 1e-3)
    assert all(torch.equal(v, t.state_dict()[k]) for k, v in before.items())  # the teacher is unchanged
    learn.export(Path(d)/'student.pkl')
    l2 = load_learner(Path(d)/'student.pkl')
    assert count_parameters(l2.model) == count_parameters(learn.model)  # the student alone: no teacher inside
    assert not any(hasattr(cb, 'teacher') for cb in l2.cbs)
    assert len(l2.predict(get_image_files(d)[0])[2]) == 10
