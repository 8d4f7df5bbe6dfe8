"""The mini job and the exported model work with the network disabled:
nothing is downloaded at run time (no model hub, no noise / RIR archives)."""

import os
import subprocess
import sys

from conftest import RECIPE

# Loaded by every Python process started with this folder first on PYTHONPATH
# (run_mini.py's train.py children included): any connection attempt fails.
BLOCK = '''
import socket

def _refuse(*args, **kwargs):
    raise OSError("network disabled by tests/integration/test_offline.py")

socket.socket.connect = socket.socket.connect_ex = _refuse
socket.create_connection = socket.getaddrinfo = _refuse
'''


def offline(cmd, site, **kwargs):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), RECIPE, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, **kwargs)


def test_mini_job_and_model_run_with_the_network_disabled(tiny_corpus, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCK)
    probe = offline([sys.executable, "-c", "import socket; socket.create_connection(('127.0.0.1', 9))"], site)
    assert probe.returncode != 0 and "network disabled" in probe.stderr  # the block is active
    out = tmp_path / "mini"
    done = offline([
        sys.executable, os.path.join(RECIPE, "run_mini.py"), "--out", str(out), "--data_folder", tiny_corpus,
        "--systems", "simclr", "--noprogressbar", "--channels=16", "--attention_channels=16", "--emb_dim=16",
        "--batch_size=8", "--num_workers=0", "--prep_workers=1", "--number_of_epochs=1", "--score_norm_cohort=10",
        "--score_norm_top_k=5", "--crops={views: [2, 1.0]}",
    ], site)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (out / "simclr" / "verification.json").is_file() and (out / "results.md").is_file()
    first, second = open(out / "simclr" / "scores.txt").readline().split()[:2]
    load = offline([sys.executable, "-c", (
        "import sys; from speechbrain.inference.speaker import SpeakerRecognition as S; "
        "m = S.from_hparams(source=sys.argv[1], savedir=sys.argv[2]); "
        "print(float(m.verify_files(sys.argv[3], sys.argv[4])[0]))"
    ), str(out / "simclr" / "inference"), str(tmp_path / "savedir"),
        os.path.join(tiny_corpus, "wav", first), os.path.join(tiny_corpus, "wav", second)], site)
    assert load.returncode == 0, load.stderr[-3000:]
    expected = float(open(out / "simclr" / "scores.txt").readline().split()[3])
    assert abs(float(load.stdout.strip().splitlines()[-1]) - expected) < 1e-4
