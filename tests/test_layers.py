"""The oneDNN fast path of SAC's layers computes the same function and gradients as plain PyTorch."""

import pytest
import torch

from aihf.mujoco.layers import onednn_available
from aihf.mujoco.sac import SACPolicy

pytestmark = pytest.mark.skipif(not onednn_available(), reason="this PyTorch build has no oneDNN linear op")


def twin_policies():
    torch.manual_seed(0)
    fast = SACPolicy(17, 6, [-1.0] * 6, [1.0] * 6, hidden=(128, 128), matmul="onednn")
    plain = SACPolicy(17, 6, [-1.0] * 6, [1.0] * 6, hidden=(128, 128), matmul="aten")
    plain.load_state_dict(fast.state_dict())
    return fast, plain


def grads(policy, loss):
    policy.zero_grad(set_to_none=True)
    loss.backward()
    return {k: p.grad.clone() for k, p in policy.named_parameters() if p.grad is not None}


def test_sac_losses_and_gradients_match_plain_pytorch():
    fast, plain = twin_policies()
    g = torch.Generator().manual_seed(1)
    B = 256  # at or above the fast path's row threshold
    obs, act = torch.randn(B, 17, generator=g), torch.rand(B, 6, generator=g) * 2 - 1
    reward, next_obs, term = torch.randn(B, generator=g), torch.randn(B, 17, generator=g), torch.zeros(B)
    noise = torch.randn(B, 6, generator=g)
    for name, make in (("critic", lambda p: p.critic_loss(obs, act, reward, next_obs, term, noise)[0]),
                       ("actor", lambda p: p.actor_loss(obs, noise)[0]),
                       ("bc", lambda p: p.bc_loss(obs, act.clamp(-0.9, 0.9)))):
        lf, lp = make(fast), make(plain)
        torch.testing.assert_close(lf, lp, rtol=1e-5, atol=1e-5, msg=f"{name} loss")
        gf, gp = grads(fast, lf), grads(plain, lp)
        assert gf.keys() == gp.keys() and gf, name
        for k in gf:
            torch.testing.assert_close(gf[k], gp[k], rtol=1e-4, atol=1e-5, msg=f"{name} gradient of {k}")


def test_actor_loss_leaves_critic_gradients_untouched():
    fast, _ = twin_policies()
    loss, _ = fast.actor_loss(torch.randn(128, 17), torch.randn(128, 6))
    fast.zero_grad(set_to_none=True)
    loss.backward()
    assert all(p.grad is None for p in fast.critic.parameters())
    assert all(p.grad is not None for p in fast.actor.parameters())


@pytest.mark.slow
def test_compiled_losses_train(hopper_data, tmp_path):
    """policy.compile=true runs the same loop end to end (about a minute of compilation on a CPU)."""
    from aihf.app import train
    from conftest import fast_cfg
    result = train(fast_cfg("aihf", hopper_data, tmp_path, ["policy.compile=true", "loop.torch_threads=1"]))
    assert result["policy_updates"] == 401
