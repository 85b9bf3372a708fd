"""Sketch_RNN_Keras.ipynb runs top to bottom: on the shipped model, and on a two-set cnn run."""

import json
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "Sketch_RNN_Keras.ipynb"


def run_notebook(data_dir, **parameters):
    """Executes the notebook in the repository folder with its parameters cell overridden.

    As papermill does, a cell setting the parameters is inserted after the cell tagged
    "parameters". Returns the executed notebook; a failing cell raises CellExecutionError.
    """
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    tagged = [i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1, "the notebook needs one cell tagged 'parameters'"
    values = {"DATA_DIR": str(data_dir), **parameters}
    source = "\n".join(f"{name} = {value!r}" for name, value in values.items())
    notebook.cells.insert(tagged[0] + 1, nbformat.v4.new_code_cell(source))
    client = NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT)}})
    client.execute()
    return notebook


def outputs_of(notebook, marker):
    """The outputs of the code cell whose source contains `marker`."""
    (cell,) = [c for c in notebook.cells if c.cell_type == "code" and marker in c.source]
    return cell.outputs


def test_committed_notebook_has_no_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


@pytest.mark.slow
def test_notebook_runs_on_the_shipped_model(shared_datasets):
    notebook = run_notebook(shared_datasets)
    pictures = outputs_of(notebook, "samples = drawer.sample(")
    assert any("image/svg+xml" in output.get("data", {}) for output in pictures)
    gif = outputs_of(notebook, "sketch_to_gif")
    assert any("image/gif" in output.get("data", {}) for output in gif)
    latent = outputs_of(notebook, "principal")
    assert "trained on one data set" in "".join(output.get("text", "") for output in latent)
    picture = "".join(output.get("text", "") for output in outputs_of(notebook, "encode_image("))
    assert "encodes strokes (encoder=rnn)" in picture
    pen = outputs_of(notebook, "pen_temperature=1.0")
    ended = re.findall(r"(the paper's rule|the pen at 1): (\d+) of 10 never ended",
                       "".join(output.get("text", "") for output in pen))
    assert [name for name, _ in ended] == ["the paper's rule", "the pen at 1"]
    assert int(ended[1][1]) < int(ended[0][1])  # the loops come from the pen (README)
    assert any("image/svg+xml" in output.get("data", {}) for output in pen)
    completions = outputs_of(notebook, "drawer.complete(")
    assert sum("image/svg+xml" in output.get("data", {}) for output in completions) == 2
    # Keras prints summaries as rich display data: the text of each model's table.
    sub_models = "".join(output.get("text", "") + output.get("data", {}).get("text/plain", "")
                         for output in outputs_of(notebook, "encoder_model(model)"))
    for name in ('Model: "encoder"', 'Model: "decoder"', 'Model: "decoder_step"', "shared:"):
        assert name in sub_models, sub_models
    # No TensorFlow C++ log lines ("I0000 00:00:1796056402.551503 30563 port.cc:153] oneDNN ...").
    streams = "".join(output.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                      for output in cell.outputs if output.get("name") == "stderr")
    assert not re.search(r"^[IWEF]\d{4} |oneDNN|cudart", streams, flags=re.M), streams


@pytest.mark.slow
def test_notebook_shows_the_latent_space_of_a_two_set_model(shared_datasets, tmp_path):
    import keras

    from seq2seqVAE import HParams, build_model

    # sketch-pix2seq's model (a CNN encoder, no KL term, the HyperLSTM decoder), so that the
    # notebook encodes pictures and draws with another official cell.
    hps = HParams.parse("dec_rnn_size=16,z_size=4,num_mixture=3,max_seq_len=250,encoder=cnn,"
                        "kl_weight=0,dec_model=hyper")
    keras.utils.set_random_seed(0)
    model = build_model(hps)
    (tmp_path / "checkpoints").mkdir()
    model.save_weights(str(tmp_path / "checkpoints" / "best.weights.h5"))
    config = {"hparams": hps.to_dict(), "scale_factor": 20.0, "max_seq_len": 250,
              "data_set": ["aaron_sheep", "short_kanji"]}
    (tmp_path / "model_config.json").write_text(json.dumps(config))
    notebook = run_notebook(shared_datasets, RUN_DIR=str(tmp_path))
    latent = outputs_of(notebook, "principal")
    assert any("image/png" in output.get("data", {}) for output in latent)
    summary = "".join(output.get("text", "") for output in outputs_of(notebook, "load_run(RUN_DIR)"))
    assert "encoder cnn on 48x48 pictures, decoder hyper 16" in summary
    pictures = outputs_of(notebook, "samples = drawer.sample(")
    assert any("image/svg+xml" in output.get("data", {}) for output in pictures)
    # The picture as given and as the CNN reads it, then its redrawings.
    redrawn = outputs_of(notebook, "encode_image(")
    assert sum("image/png" in output.get("data", {}) for output in redrawn) == 2
    assert sum("image/svg+xml" in output.get("data", {}) for output in redrawn) == 1
