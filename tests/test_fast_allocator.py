"""irnet_lib.fast.allocator: glibc's malloc told to keep freed memory, and back."""
import platform

import pytest
import torch

from irnet_lib.fast import allocator

glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not glibc, reason="mallopt is glibc's")
def test_turns_on_and_back_off():
    before = allocator.setting
    try:
        assert allocator.reuse_freed_memory(True) is True
        assert allocator.setting == "reuse"
        x = torch.randn(64, 96, 56, 56)  # 77 MB: above any mmap threshold, now from the heap
        del x
        assert allocator.reuse_freed_memory(False) is True
        assert allocator.setting == "default"
    finally:
        allocator.reuse_freed_memory(before == "reuse")


def test_elsewhere_it_is_a_no_op(monkeypatch):
    monkeypatch.setattr(allocator, "_libc", lambda: None)
    state = allocator.setting
    assert allocator.reuse_freed_memory() is False
    assert allocator.setting == state
