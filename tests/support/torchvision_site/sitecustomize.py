"""Run by Python at start-up in a process whose PYTHONPATH holds this folder (and the repository):
a backend serving SAM 3 in the tests gets the torchvision stand-in that transformers' SAM 3 needs
(tests/support/concept_models.py says why: no CPU torchvision installs beside this torch)."""

from tests.support.concept_models import install_torchvision_stand_in

install_torchvision_stand_in()
