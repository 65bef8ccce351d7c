"""Test-only torchvision stand-in; see ../README.md."""
