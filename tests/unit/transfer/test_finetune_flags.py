"""How the fine-tuning trainer reads nnUNetv2_train's -pretrained_weights from the command line."""


def test_pretrained_weights_path_is_an_exact_flag(monkeypatch):
    from nnunet_cmcl.transfer.finetune import PRETRAINED_ENV, pretrained_weights_path

    monkeypatch.delenv(PRETRAINED_ENV, raising=False)
    argv = ["501", "3d_fullres", "0", "-p", "nnUNetResEncUNetMPlans", "-pretrained_weights", "ckpt.pth"]
    assert pretrained_weights_path(argv) == "ckpt.pth"
    assert pretrained_weights_path(argv[:5]) is None  # -p is the plans, not an abbreviation of it
    monkeypatch.setenv(PRETRAINED_ENV, "env.pth")
    assert pretrained_weights_path(argv[:5]) == "env.pth"


def test_pretrained_weights_path_reads_the_equals_spelling_as_argparse_does(monkeypatch):
    from nnunet_cmcl.transfer.finetune import PRETRAINED_ENV, pretrained_weights_path

    monkeypatch.delenv(PRETRAINED_ENV, raising=False)
    argv = ["501", "3d_fullres", "0", "-tr", "nnUNetTrainerCMCLFinetune"]
    # nnUNetv2_train's argparse takes -pretrained_weights=PATH as one token, and the last of repeated flags
    assert pretrained_weights_path(argv + ["-pretrained_weights=ckpt.pth"]) == "ckpt.pth"
    assert pretrained_weights_path(argv + ["-pretrained_weights=a=b.pth"]) == "a=b.pth"
    assert pretrained_weights_path(argv + ["-pretrained_weights", "a.pth", "-pretrained_weights=b.pth"]) == "b.pth"
    assert pretrained_weights_path(argv + ["-pretrained_weights=a.pth", "-pretrained_weights", "b.pth"]) == "b.pth"
    assert pretrained_weights_path(argv + ["-p=x.pth"]) is None  # argparse: the plans, named 'x.pth'
