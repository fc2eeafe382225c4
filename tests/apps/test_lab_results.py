"""The lab's results rows: every setting that differs between runs shows, and a diverged run says so."""
from vpt_explore.apps.lab_results import COLUMNS, ROW_KEYS, result_row, results_html
from vpt_explore.training.loop import History


def hist(status="completed", warnings=(), base_lr=0.1, message=""):
    return History(status=status, warnings=list(warnings), base_lr=base_lr, message=message, best_val_acc=0.5,
                   trainable=10, seconds=1.0)


def test_rows_show_every_setting_that_can_differ():
    assert len(COLUMNS) == len(ROW_KEYS) + 1
    a = result_row("vpt-deep", "p=10", "count", "tiny-dino", hist(), {"acc": 0.5}, n_train=400, epochs=10, device="cpu")
    b = result_row("vpt-deep", "p=10", "count", "tiny-dino", hist(base_lr=0.5), {"acc": 0.5}, n_train=800, epochs=20,
                   device="cuda:0")
    differ = {k for k in ROW_KEYS if a[k] != b[k]}
    assert differ == {"n_train", "epochs", "base_lr", "device"}
    assert all(str(v) in results_html([b]) for v in (800, 20, 0.5, "cuda:0"))


def test_a_diverged_or_spiking_run_says_so_with_its_hint():
    d = result_row("linear", "-", "count", "tiny-dino", hist("diverged", ["loss spiked"], message="diverged: lower base_lr"),
                   {"acc": 0.1})
    assert d["status"] == "diverged" and "lower base_lr" in d["hint"] and "lower base_lr" in results_html([d])
    s = result_row("linear", "-", "count", "tiny-dino", hist(warnings=["loss spiked to 9"]), {"acc": 0.1})
    assert s["status"] == "completed, loss spiked" and s["hint"] == "loss spiked to 9"
