"""The README documents what the code does."""

import dataclasses
import re
from pathlib import Path

from seq2seqVAE import HParams

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_hparams_table_lists_every_hparam_with_its_default():
    rows = dict(re.findall(r"^\| `(\w+)` \| ([^|]+) \|", README, flags=re.M))
    for field in dataclasses.fields(HParams):
        assert field.name in rows, f"README's hparams table lacks {field.name}"
        written = rows[field.name].strip()
        if isinstance(field.default, float):
            assert float(written) == field.default, field.name
        else:
            assert written == str(field.default), field.name
    documented = {name for name in rows if name in {f.name for f in dataclasses.fields(HParams)}}
    assert len(documented) == len(dataclasses.fields(HParams))


def test_ci_runs_the_readme_test_command():
    commands = re.findall(r"```bash\n(.*?)\n```", README, flags=re.S)
    test_command = commands[1].strip()
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert test_command in ci.splitlines()
