"""Data-parallel training with tf.distribute: two devices in one process, two worker processes.

The reference is always the ordinary single-device path: a replica must compute what one
device computes on the same global batch (the same losses, gradients and z noise), so the
weights of a distributed run follow the single-process run's.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

import utils
from batch_generator import SketchBatches
from sketch_rnn.tf_backend.distribute import local_cluster

REPO = Path(__file__).resolve().parents[1]
# No dropout and no augmentation (each replica draws its own masks and augments its own
# share); the z noise stays. Two steps of 20 sketches (10 per worker) per epoch.
HPARAMS = ("enc_rnn_size=16,dec_rnn_size=32,z_size=8,num_mixture=4,batch_size=20,steps_per_epoch=2,"
           "max_seq_len=100,"
           "use_recurrent_dropout=False,random_scale_factor=0,augment_stroke_prob=0,"
           "lstm_matmul_dtype=float32")
TIMEOUT = 240  # seconds for one run of the training command, start-up included


# ---------------------------------------------------------------------------------------
# Which replica trains on which sketches
# ---------------------------------------------------------------------------------------


def numbered_loader(count):
    """Sketches whose first offset is their index, so that a batch row says which it is."""
    sketches = [np.array([[k, 0, 0], [1, 1, 0], [2, 1, 1]][: 2 + k % 2], dtype=np.float32)
                for k in range(count)]
    return utils.DataLoader(sketches, batch_size=10, max_seq_len=5, name="train")


def rows(x):
    return [int(v) for v in x[:, 1, 0]]  # the first point after the start token


def test_replicas_share_each_global_batch_and_never_a_sketch_in_an_epoch():
    batches = SketchBatches(numbered_loader(95), batch_size=10, shuffle=True, seed=3)
    for epoch in (0, 1):
        batches.epoch = epoch
        seen = []
        for step in range(len(batches)):
            shares = [rows(batches.piece(epoch, step, r, 3)[0]) for r in range(3)]
            assert [len(s) for s in shares] == [4, 3, 3]  # the first share takes the extra row
            # In replica order, the shares are the batch one device trains on.
            assert sum(shares, []) == rows(batches[step][0])
            seen += sum(shares, [])
        assert len(seen) == len(set(seen)) == 90  # no sketch twice in an epoch
    # Each epoch's order is drawn anew, so replica 0 trains on other sketches.
    first = [rows(batches.piece(e, 0, 0, 3)[0]) for e in (0, 1)]
    assert first[0] != first[1]


def test_a_share_of_a_small_last_batch_may_be_empty_and_is_trimmed_on_its_own():
    loader = numbered_loader(21)
    batches = SketchBatches(loader, batch_size=10, shuffle=False, drop_remainder=False, trim=True)
    x, y = batches.piece(0, 2, 1, 2)  # the last batch has 1 sketch: replica 1 gets none
    assert x.shape == (0, 2, 5) and y.shape == (0, 1, 5)
    (x0, _), (x1, _) = batches.piece(0, 0, 0, 2), batches.piece(0, 0, 1, 2)
    # Sketches 0-4 and 5-9: each share is cut after its own longest sketch (2 or 3 points).
    assert rows(x0) == [0, 1, 2, 3, 4] and rows(x1) == [5, 6, 7, 8, 9]
    assert x0.shape[1] == x1.shape[1] == 4
    assert np.array_equal(x0, batches[0][0][:5, :4])


@pytest.mark.tensorflow_only
@pytest.mark.parametrize("tf_config, flag, message", [
    (None, "--distribute=multi_worker", "--distribute=multi_worker: TF_CONFIG names no cluster"),
    ("{'cluster': 1}", "--distribute=auto", "TF_CONFIG is not JSON"),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "chief", "index": 0}}',
     "--distribute=auto", 'TF_CONFIG: "task" must name this process\'s job and index'),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 0}}',
     "--distribute=mirrored", "use --distribute=multi_worker (or unset TF_CONFIG)"),
])
def test_distribution_mistakes_are_one_line_errors(tf_config, flag, message, monkeypatch, capsys,
                                                   tmp_path):
    import seq2seqVAE_train

    monkeypatch.delenv("TF_CONFIG", raising=False)
    if tf_config is not None:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    code = seq2seqVAE_train.main([f"--experiment_dir={tmp_path / 'run'}", flag])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "run").exists()  # nothing was written


# ---------------------------------------------------------------------------------------
# MirroredStrategy over two logical CPUs, in one process
# ---------------------------------------------------------------------------------------


@pytest.mark.tensorflow_only
@pytest.mark.parametrize("extra", ["", "encoder=cnn,kl_weight=0"], ids=["rnn", "cnn-no-kl"])
def test_mirrored_strategy_on_two_cpus_computes_what_one_device_computes(extra, shared_datasets,
                                                                         tmp_path):
    out = tmp_path / "result.json"
    result = subprocess.run(
        [sys.executable, str(REPO / "tests" / "mirrored_vs_one_device.py"),
         str(shared_datasets / "aaron_sheep.npz"), str(out), extra],
        capture_output=True, text=True, timeout=TIMEOUT, cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3"))
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads(out.read_text())
    assert got["replicas"] == 2
    assert all("fused C++ kernel" in line for line in got["engines"]), got["engines"]
    assert got["optimizer"] == "AdamClippingSummedGradients"
    one, two = got["one"], got["two"]
    assert set(one) == set(two) >= {"loss", "val_loss", "lr"}
    # sketch-pix2seq's kl_weight=0 has no KL term to log or anneal, distributed or not.
    assert ({"kl_loss", "kl_weight"} <= set(one)) == (extra == "")
    for key in one:  # losses, validation (whose last share is empty), both schedules
        assert two[key] == pytest.approx(one[key], rel=2e-6), key
    for key in got["evaluate_one"]:
        assert got["evaluate_two"][key] == pytest.approx(got["evaluate_one"][key], rel=2e-6), key
    assert got["step_two"] == 2
    for a, b in zip(got["weights_one"], got["weights_two"]):  # 2 steps with clipped gradients
        np.testing.assert_allclose(b, a, atol=2e-5)
    # Dropout masks: replica 0 draws what one device draws, replica 1 other numbers.
    assert got["per_replica"][0] == got["outside"]
    assert not np.allclose(got["per_replica"][1], got["outside"])


# ---------------------------------------------------------------------------------------
# Two worker processes on 127.0.0.1 (MultiWorkerMirroredStrategy), through the command
# ---------------------------------------------------------------------------------------


def command(shared_datasets, run_dir, *flags):
    return [sys.executable, str(REPO / "seq2seqVAE_train.py"), f"--data_dir={shared_datasets}",
            "--data_set=aaron_sheep", f"--experiment_dir={run_dir}", "--verbose=2", *flags]


def start_workers(shared_datasets, run_dir, scratch, *flags):
    """Two workers of one cluster; returns their Popen objects (stdout, stderr to files)."""
    cluster = local_cluster(2)
    workers = []
    for index in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": index}}))
        log = open(scratch / f"worker{index}.log", "w")  # noqa: SIM115 (closed with the process)
        workers.append(subprocess.Popen(
            command(shared_datasets, run_dir, f"--worker_scratch_dir={scratch / f'worker{index}'}",
                    *flags), cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT))
    return workers


def finish(workers, timeout=TIMEOUT):
    deadline = time.time() + timeout
    try:
        for worker in workers:
            worker.wait(timeout=max(1, deadline - time.time()))
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    return [worker.returncode for worker in workers]


def arrays(path):
    found = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, item: found.__setitem__(name, np.asarray(item))
                     if isinstance(item, h5py.Dataset) else None)
    return found


def checkpoint(folder, step):
    (path,) = Path(folder).glob(f"checkpoints/ckpt-*-step{step:08d}.weights.h5")
    return path


def assert_same_weights(a, b, atol):
    a, b = arrays(a), arrays(b)
    assert sorted(a) == sorted(b)
    for name in a:
        if name.startswith("layers/"):
            np.testing.assert_allclose(a[name], b[name], atol=atol, err_msg=name)


@pytest.fixture(scope="module")
def runs(shared_datasets, tmp_path_factory):
    """One epoch on two workers and, at the same time, two epochs in one process."""
    base = tmp_path_factory.mktemp("distributed")
    single = subprocess.Popen(command(shared_datasets, base / "single", f"--hparams={HPARAMS},epochs=2",
                                      "--distribute=none", "--no_tensorboard_images"),
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    workers = start_workers(shared_datasets, base / "run", base, f"--hparams={HPARAMS},epochs=1",
                            "--no_tensorboard_images")
    codes = finish(workers)
    _, single_err = single.communicate(timeout=TIMEOUT)
    logs = [(base / f"worker{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0], "\n----\n".join(log[-3000:] for log in logs)
    assert single.returncode == 0, single_err[-3000:]
    return dict(base=base, single=base / "single", run=base / "run", logs=logs,
                chief_pid=workers[0].pid)


@pytest.mark.tensorflow_only
def test_two_workers_end_with_the_weights_of_one_process(runs):
    for log in runs["logs"]:
        assert "MultiWorkerMirroredStrategy: 2 workers, 2 replicas" in log
        assert "10 sketches on each of 2 replicas" in log
        assert "fused C++ kernel" in log
    chief = checkpoint(runs["run"], 2)
    # Both workers hold the same model: the same gradients were applied on each.
    assert_same_weights(chief, checkpoint(runs["base"] / "worker1", 2), atol=0)
    # The same global batches in one process give the same weights (float tolerance).
    assert_same_weights(chief, checkpoint(runs["single"], 2), atol=1e-5)


@pytest.mark.tensorflow_only
def test_only_the_chief_writes_the_run_folder(runs):
    def files(folder):
        return sorted(str(p.relative_to(folder).parent) + "/" + p.name.split(".")[0]
                      for p in Path(folder).rglob("*") if p.is_file())

    run = runs["run"]
    assert "Not the chief" in runs["logs"][1] and "Not the chief" not in runs["logs"][0]
    # The run folder holds what a one-process run writes, each file once.
    single = [f for f in files(runs["single"]) if "step00000004" not in f]
    assert files(run) == single
    # TensorBoard names its files after the writing process: all the chief's.
    events = list((run / "logs").rglob("events.out.tfevents.*"))
    pids = {re.search(r"\.(\d+)\.\d+\.v2$", p.name).group(1) for p in events}
    assert len(events) == 2 and pids == {str(runs["chief_pid"])}  # train/ and validation/
    rows = (run / "logs" / "training_log.csv").read_text().splitlines()
    assert len(rows) == 2  # a header and epoch 0, written once
    assert json.loads((run / "test_losses.json").read_text())["step"] == 2
    # Worker 1 wrote only checkpoints, to its own scratch folder.
    assert {p.parent.name for p in (runs["base"] / "worker1").rglob("*") if p.is_file()} == {
        "checkpoints"}


@pytest.mark.tensorflow_only
def test_resume_on_two_workers_continues_and_a_killed_worker_stops_the_run(runs, shared_datasets):
    """Resumes the one-epoch run on two workers, then kills worker 1 after epoch 2."""
    scratch = runs["base"] / "resumed"
    scratch.mkdir()
    workers = start_workers(shared_datasets, runs["run"], scratch, "--hparams=epochs=1000",
                            f"--checkpoint={runs['run']}", "--no_tensorboard_images")
    try:
        deadline = time.time() + TIMEOUT
        while time.time() < deadline and not list(runs["run"].glob("checkpoints/ckpt-*step00000004*")):
            assert workers[0].poll() is None, (scratch / "worker0.log").read_text()[-3000:]
            time.sleep(0.2)
        killed_at = time.time()
        workers[1].send_signal(signal.SIGKILL)
        codes = finish(workers, timeout=120)
    finally:
        finish(workers, timeout=1)
    stopped_after = time.time() - killed_at
    log = (scratch / "worker0.log").read_text()
    assert codes[0] == 3, log[-3000:]
    assert "resuming from" in log and "ckpt-epoch0001-step00000002" in log
    assert "the multi-worker run stopped: a worker is gone" in log
    assert f"Restart every worker with --checkpoint={runs['run']}" in log
    print(f"the chief stopped {stopped_after:.1f} s after worker 1 was killed")
    # The resumed run continued the step count and the one-process run's training.
    assert_same_weights(checkpoint(runs["run"], 4), checkpoint(runs["single"], 4), atol=1e-5)
    # The chief's checkpoints are complete and no temporary file is left.
    saved = sorted((runs["run"] / "checkpoints").glob("ckpt-*.weights.h5"))
    assert saved and not list((runs["run"] / "checkpoints").glob(".tmp-*"))
    for path in saved:
        with h5py.File(path, "r") as f:
            assert "layers" in f and "optimizer" in f
    assert f"The last checkpoint is intact: {saved[-1]}" in log
