"""The ADReSS layout loader on a fixture written in that exact layout."""
from __future__ import annotations

import pytest

from recipes.dementia_speech.readers.adress import ADRESS_COLUMNS, load_adress, read_meta


def test_loads_train_and_test_with_labels_meta_and_transcripts(adress_root):
    frame = load_adress(adress_root)
    assert tuple(frame.columns) == ADRESS_COLUMNS
    rows = {r["speaker_id"]: r for r in frame.iter_rows(named=True)}
    assert sorted(rows) == ["S001", "S002", "S003", "S004", "S160", "S161"]
    assert [rows[s]["label"] for s in ("S001", "S002", "S003", "S004")] == [0, 0, 1, 1]
    assert rows["S160"]["label"] == 0 and rows["S161"]["label"] == 1  # from test_results.txt
    assert rows["S001"]["age"] == 64 and rows["S001"]["gender"] == "male" and rows["S001"]["mmse"] == 29
    assert rows["S002"]["mmse"] is None  # NA
    assert rows["S161"]["mmse"] == 14 and rows["S161"]["split"] == "test"
    assert rows["S003"]["transcript"] == "the boy boy is &uh taking (..) a cookie"
    assert rows["S003"]["transcript_source"] == "manual"
    assert rows["S161"]["transcript"] is None and rows["S161"]["transcript_source"] is None  # no .cha: ASR later
    assert rows["S160"]["cha_path"].endswith("test/transcription/S160.cha")


def test_missing_layout_names_the_expected_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="Full_wave_enhanced_audio"):
        load_adress(tmp_path)


def test_meta_without_header_raises(tmp_path):
    path = tmp_path / "meta_data.txt"
    path.write_text("S001 ; 64 ; 0 ; 29\n")
    with pytest.raises(ValueError, match="header"):
        read_meta(path)
