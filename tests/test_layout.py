"""The package's structure: import contracts kept, no import circle, no alias of the first layout's module paths,
and a run folder written by the 0.1 layout resumed and evaluated by today's code (within a tolerance: it was
computed on another CPU)."""

import argparse
import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hamburger.cli import main
from hamburger.engine.checkpoint import load_checkpoint, load_weights

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "seq-run-0.1"


@pytest.mark.parametrize(
    "tool",
    [
        ["ruff", "format", "--check", "src", "tests", "benchmarks"],
        ["ruff", "check", "src", "tests", "benchmarks"],
        ["mypy", "--no-incremental"],
    ],
    ids=["format", "ruff", "mypy"],
)
def test_lint_is_clean(tool):
    """`make lint`'s formatter check, linter and type checker (its import contracts: the next test) pass, so
    `make test` fails when they do."""
    command = [str(Path(sys.executable).parent / tool[0]), *tool[1:]]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]


def test_import_contracts_are_kept():
    lint = Path(sys.executable).parent / "lint-imports"
    done = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "0 broken" in done.stdout


def test_the_import_graph_has_no_cycle():
    import grimp

    graph = grimp.build_graph("hamburger", cache_dir=None)
    modules = set(graph.modules)
    # a cycle through any two modules shows as each reaching the other
    for module in sorted(modules):
        for other in graph.find_modules_directly_imported_by(module) & modules:
            assert not graph.chain_exists(importer=other, imported=module), f"{module} <-> {other}"


def test_no_alias_module_of_the_first_layout_remains():
    """The package was never released: the first layout's module paths are gone, not aliased."""
    for old in (
        "hamburger.recipes",
        "hamburger.models",
        "hamburger.seg_cli",
        "hamburger.deprecation",
        "hamburger.data.animal_scenes",
        "hamburger.data.transforms",
    ):
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(old)
    import hamburger.data

    with pytest.raises(AttributeError):
        hamburger.data.build_dataset  # noqa: B018  (it lives in hamburger.seg.data)


def test_new_paths_do_not_warn():
    names = (
        "hamburger.seg.train",
        "hamburger.gan.train",
        "hamburger.seq.train",
        "hamburger.bench.cli",
        "hamburger.viz.cli",
        "hamburger.data.silhouettes",
        "hamburger.cli",
    )
    code = "; ".join(f"import {n}" for n in names)
    cmd = [sys.executable, "-W", "error::DeprecationWarning", "-c", code]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the fixture was written with one thread; the thread count alone changes a trajectory
    yield
    torch.set_num_threads(threads)


# The fixture's first four steps were computed on the CPU that wrote it; another CPU model (oneDNN/MKL pick other
# kernels on AMD, on Intel with and without AMX) rounds those steps differently (ulp level: 194 of its 2,628 weights at
# step 4 differ by at most 3e-8 on an AMD EPYC). A resume that lost the optimiser's moments, the schedule or the RNG
# moves a weight by about the learning rate (2e-3); 1e-5 is far below that and far above the rounding.
FIXTURE_ATOL = 1e-5


def test_a_run_folder_of_the_old_layout_resumes_and_evaluates(tmp_path, one_thread, capsys):
    """The 0.1 run folder resumes to step 6 with today's code, its weights within FIXTURE_ATOL of a straight run on
    this machine, and evaluates. Not bitwise: the fixture's steps 1-4 ran on another CPU. The bitwise promise (a
    resumed run equals a straight run) is tested per machine, on runs made in the same test
    (tests/test_seq.py::test_a_killed_sequence_run_resumes_bitwise_on_this_machine)."""
    run = tmp_path / "old"
    shutil.copytree(FIXTURE, run)
    assert load_checkpoint(run)[2]["step"] == 4  # killed after step 5, last committed at 4
    # the run predates ham_grad, ham_norm and ham_memory and trained with one-step, the unnormalised solve and the
    # carried dictionary; the defaults are chunkwise, unit and stats now: resuming it unchanged is refused (naming the
    # fields) instead of silently switching its gradient and its forward half-way
    with pytest.raises(
        SystemExit,
        match=r"ham_grad: 'one-step' -> 'chunkwise'.*ham_norm: 'none' -> 'unit'.*"
        r"ham_memory: 'dict' -> 'stats'",
    ):
        main(["seq", "train", "--config", str(run / "config.yaml"), "--out", str(run), "--resume"])
    trained_with = ["--ham-grad", "one-step", "--ham-norm", "none", "--ham-memory", "dict"]  # the 0.1 run's forms
    main(["seq", "train", "--config", str(run / "config.yaml"), "--out", str(run), "--resume", *trained_with])
    assert load_checkpoint(run)[2]["step"] == 6
    main(["seq", "train", "--config", str(FIXTURE / "config.yaml"), "--out", str(tmp_path / "straight"), *trained_with])
    resumed, straight = load_weights(run / "last.safetensors"), load_weights(tmp_path / "straight" / "last.safetensors")
    assert resumed.keys() == straight.keys()
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=0, atol=FIXTURE_ATOL, msg=key)
    before = load_weights(FIXTURE / "last.safetensors")
    assert any(not torch.equal(resumed[k], before[k]) for k in straight)  # steps 5 and 6 trained
    capsys.readouterr()
    main(["seq", "eval", "--run", str(run)])
    assert "test recall accuracy" in capsys.readouterr().out
    assert (run / "eval.json").is_file()


MISSING = "numpy,PIL,yaml,safetensors,timm,skimage,matplotlib,tqdm,sklearn,torchmetrics,tensorboard"  # torch's own: not
PROBE = """
import sys, importlib.abc
class Missing(importlib.abc.MetaPathFinder):  # as after `pip install hamburger`: torch and nothing optional
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in set(sys.argv[1].split(",")):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Missing())
from hamburger.cli import main
for argv in (["--help"], ["demo", "--quick"], ["seg", "train", "--iters", "3"], ["gan", "--help"], ["bench", "ham"]):
    try:
        main(argv)
    except SystemExit as e:
        print("exit", e.code if isinstance(e.code, int) else 1, e.code if isinstance(e.code, str) else "", flush=True)
"""


def test_a_command_without_its_extra_says_what_to_install():
    done = subprocess.run([sys.executable, "-c", PROBE, MISSING], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert 'demo                (not installed: pip install "hamburger[demo]")' in out  # --help still works
    assert "hamburger demo needs the optional dependency 'numpy': pip install \"hamburger[demo]\"" in out
    assert "hamburger seg needs the optional dependency 'numpy': pip install \"hamburger[seg]\"" in out
    assert "hamburger gan needs the optional dependency 'numpy': pip install \"hamburger[gan]\"" in out
    assert "hamburger bench needs the optional dependency" in out and 'pip install "hamburger[bench]"' in out
    assert "Traceback" not in done.stderr


def _flags(parser, path=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _flags(sub, (*path, name))
        else:
            yield " ".join(path), action


def test_every_flag_named_like_a_declared_option_is_generated_from_its_declaration():
    """Every flag of every command named like an option its task declares (the run's fields, R, L, every
    ``--ham-*``, --iters, --out, --seeds, ...) is generated from that declaration (type, bounds, help): none is written
    by hand, so a flag means one thing, parsed one way, in every command."""
    import dataclasses

    from hamburger.cli import build_parser
    from hamburger.engine.config import ExperimentOptions, RunConfig
    from hamburger.gan.config import GANTrainConfig
    from hamburger.seg.config import SegTrainConfig
    from hamburger.seq.config import SeqTrainConfig

    def names(*classes):
        return {f.name for cls in classes for f in dataclasses.fields(cls)} | {"rank", "chunk"}

    shared = names(RunConfig, ExperimentOptions)
    task = {"seq": names(SeqTrainConfig), "gan": names(GANTrainConfig)}  # the others: segmentation's
    checked = []
    for command, action in _flags(build_parser()):
        declared = shared | task.get(command.split(" ")[0], names(SegTrainConfig))
        if action.dest in declared or action.dest.startswith("ham_"):
            assert getattr(action, "declared", None), f"hamburger {command} --{action.dest.replace('_', '-')}"
            checked.append((command, action.dest))
    for command, dest in [
        ("seq compare", "ham_decay"),
        ("seq compare", "pairs"),
        ("seq bench", "rank"),
        ("seq bench", "heads"),
        ("seg eval", "rank"),
        ("seg compare", "iters"),
        ("seg compare", "out"),
        ("ablate", "ham_grad"),
        ("ablate", "shard"),
        ("demo", "seed"),
        ("gan compare", "ema"),
        ("gan sample", "out"),
        ("bench solve", "rank"),
        ("bench crossover", "device"),
        ("decompose", "out"),
    ]:
        assert (command, dest) in checked


def test_a_command_default_says_what_it_means_and_a_sweep_parses_each_value():
    from hamburger.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["seq", "compare", "--pairs", "4,16"])
    assert args.pairs == (4, 16) and args.iters is None and args.out is None
    helps = {(c, a.dest): a.help for c, a in _flags(parser)}
    assert helps[("seq compare", "iters")] == "optimiser steps [here: the task's]"
    assert helps[("seg compare", "iters")] == "optimiser steps [here: 800]"
    for bad in (["seq", "compare", "--pairs", "4,0"], ["seg", "compare", "--iters", "0"], ["ablate", "--jobs", "0"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)


def test_the_tasks_share_one_set_of_run_fields():
    """The three tasks' configs subclass one base of run fields and extend one resume-free set."""
    import dataclasses

    from hamburger.engine.config import RUN_FIELDS, RUN_FREE, RunConfig
    from hamburger.engine.loop import ENGINE_FREE
    from hamburger.gan.config import RESUME_FREE as GAN_FREE
    from hamburger.gan.config import GANTrainConfig
    from hamburger.seg.config import RESUME_FREE as SEG_FREE
    from hamburger.seg.config import SegTrainConfig
    from hamburger.seq.config import RESUME_FREE as SEQ_FREE
    from hamburger.seq.config import SeqTrainConfig

    assert ENGINE_FREE <= RUN_FREE <= set(RUN_FIELDS)
    for cls, free in ((SegTrainConfig, SEG_FREE), (GANTrainConfig, GAN_FREE), (SeqTrainConfig, SEQ_FREE)):
        assert issubclass(cls, RunConfig) and RUN_FREE <= free
        assert set(RUN_FIELDS) <= {f.name for f in dataclasses.fields(cls)}
    assert SegTrainConfig().workers == 2 and SeqTrainConfig().workers == 0  # a task redeclares a default it changes
