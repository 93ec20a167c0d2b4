"""The training logs: a new file gets its header, an existing one keeps its columns, and a
resumed run drops the rows its stopped predecessor wrote past the last checkpoint."""

import csv

from v2x_vlm_ros.training.csv_log import CsvLog

FIELDS = ["epoch", "step", "loss"]


def read(path):
    with open(path, newline="") as fh:
        return list(csv.reader(fh))


def test_a_new_log_gets_its_header_and_rows_in_its_columns(tmp_path):
    path = tmp_path / "train_log.csv"
    log = CsvLog(path, FIELDS)
    log.write({"step": 1, "loss": 0.5, "epoch": 1, "unknown": 9})
    log.write({"epoch": 1, "step": 2})
    assert read(path) == [FIELDS, ["1", "1", "0.5"], ["1", "2", ""]]


def test_resuming_keeps_the_files_columns_and_rows_up_to_the_checkpoint(tmp_path):
    path = tmp_path / "train_log.csv"
    # a stopped run: checkpoint at step 4, rows up to 6 and a line cut by the kill
    path.write_text("epoch,step,loss,kd\n1,2,0.9,0.1\n1,4,0.8,0.1\n1,6,0.7,0.1\n1,")
    log = CsvLog(path, ["epoch", "step", "loss"], from_step=4)
    assert log.fields == ["epoch", "step", "loss", "kd"]
    log.write({"epoch": 1, "step": 6, "loss": 0.65, "kd": 0.2})
    assert read(path) == [["epoch", "step", "loss", "kd"], ["1", "2", "0.9", "0.1"], ["1", "4", "0.8", "0.1"],
                          ["1", "6", "0.65", "0.2"]]


def test_a_log_with_nothing_past_the_checkpoint_is_left_byte_for_byte(tmp_path):
    path = tmp_path / "eval_log.csv"
    text = "epoch,step,l2_avg\n1,675,2.7\n2,1350,2.85\n"
    path.write_text(text)
    CsvLog(path, ["epoch", "step", "l2_avg"], from_step=1350)
    assert path.read_text() == text
    CsvLog(path, ["epoch", "step", "l2_avg"], from_step=0)  # started over: every earlier row goes
    assert read(path) == [["epoch", "step", "l2_avg"]]
