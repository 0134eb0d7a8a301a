import pytest
import torch


@pytest.fixture
def one_torch_thread():
    """Many tiny tensor ops (the data tests): with 2 cores, a second thread only adds hand-offs."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
