"""Suite-wide set-up: the oracle's torchvision stand-in goes on sys.path (tests only)."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "oracle_stubs"))
