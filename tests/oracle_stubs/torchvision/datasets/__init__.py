"""Dataset names `timm.data` imports at module level; import-only, no oracle loads a dataset."""

from __future__ import annotations


class _Unavailable:
    """Stands in for a torchvision dataset class; constructing one is an error."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise NotImplementedError(f"{type(self).__name__} is not part of the test-only torchvision stand-in")


class CIFAR10(_Unavailable):
    pass


class CIFAR100(_Unavailable):
    pass


class MNIST(_Unavailable):
    pass


class KMNIST(_Unavailable):
    pass


class FashionMNIST(_Unavailable):
    pass


class ImageFolder(_Unavailable):
    pass
