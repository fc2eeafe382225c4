"""A few plain SGD steps on one batch, for the 'loss falls' and 'gradients only where they should be'
checks of the prompt families (shared by the tests of swin, pixel and conv prompts)."""
import torch
import torch.nn.functional as F


def sgd_losses(model, x, y, steps: int = 12, lr: float = 0.05, after_first_backward=None):
    """Losses of ``steps`` SGD (momentum 0.9) steps on (x, y); ``after_first_backward(model)`` runs
    once, when the first gradients exist and before they are applied."""
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr, momentum=0.9)
    losses = []
    for step in range(steps):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        if step == 0 and after_first_backward is not None:
            after_first_backward(model)
        opt.step()
        losses.append(loss.item())
    return losses
