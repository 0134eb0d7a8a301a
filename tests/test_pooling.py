"""The pooling of SE and of CondConv's routing: the mean over H and W, with the mean's gradient."""
import torch

from irnet_lib.pooling import global_avg_pool


def test_equals_the_mean_forward_and_backward():
    torch.manual_seed(0)
    for x in (torch.randn(3, 5, 7, 6), torch.randn(3, 5, 7, 6).contiguous(memory_format=torch.channels_last)):
        x.requires_grad_()
        g = torch.randn(3, 5)
        ours = global_avg_pool(x)
        torch.testing.assert_close(ours, x.mean((2, 3)))
        (a,) = torch.autograd.grad(ours, x, g)
        (b,) = torch.autograd.grad(x.mean((2, 3)), x, g)
        torch.testing.assert_close(a, b)
