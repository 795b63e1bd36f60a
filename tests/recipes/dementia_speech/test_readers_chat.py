"""The CHAT parser keeps the participant's words, pauses and fillers and drops CHAT codes."""
from __future__ import annotations

import pytest

from recipes.dementia_speech.readers.chat import ChatTranscript, clean_utterance, parse_chat, read_chat, spoken_words

SAMPLE = """@UTF8
@Begin
@Languages:\teng
@Participants:\tPAR Participant, INV Investigator
@ID:\teng|Pitt|PAR|72;|female|ProbableAD||Participant|18||
@ID:\teng|Pitt|INV|||||Investigator|||
@Media:\tS042, audio
*INV:\tjust tell me everything you see happening . \x150_2581\x15
*PAR:\twell <the little> [/] the little boy is &uh taking (.) cookies [: cookie] [* m] . \x152581_8234\x15
%mor:\tco|well det:art|the adj|little n|boy
\tthis continuation belongs to the %mor tier
*PAR:\tthe girl [//] the mother (..) is &-um drying &=laughs the dish(es) xxx +...
\tand the water (...) is (1.5) overflowing (0.3) .
*INV:\tanything else ?
*PAR:\t&hm I don't know@l „ 0is that all ?
@End
"""


def test_keeps_participant_tiers_with_pauses_and_fillers():
    transcript = parse_chat(SAMPLE)
    assert transcript.utterances == [
        "well the little the little boy is &uh taking (.) cookies",
        "the girl the mother (..) is &um drying the dishes and the water (...) is (..) overflowing (.)",
        "&hm i don't know that all",
    ]
    assert "INV" not in transcript.text and "everything" not in transcript.text
    assert "continuation" not in transcript.text  # a %mor continuation line is not speech


def test_counts_and_header():
    transcript = parse_chat(SAMPLE)
    assert transcript.pause_count == 5
    assert transcript.filler_count == 3
    assert transcript.header["ID"].startswith("eng|Pitt|PAR|72;")
    assert transcript.header["Media"] == "S042, audio"


@pytest.mark.parametrize("line,expected", [
    ("the boy [/] boy [//] girl .", "the boy boy girl"),
    ("<I think> [/] I think it's a (.) cookie(s) .", "i think i think it's a (.) cookies"),
    ("&=coughs &+fr friend's wife [+ exc] !", "friend's wife"),
    ("the(.)stool", "the (.) stool"),
    ("water (2.5) on floor \x15100_200\x15", "water (...) on floor"),
])
def test_clean_utterance(line, expected):
    assert clean_utterance(line) == expected


def test_spoken_words_drop_pauses_and_mark_of_fillers():
    assert spoken_words("the &uh boy (..) fell") == ["the", "uh", "boy", "fell"]


def test_no_participant_raises_with_the_file_name(tmp_path):
    path = tmp_path / "S001.cha"
    path.write_text("@Begin\n*INV:\thello .\n@End\n")
    with pytest.raises(ValueError, match=r"S001\.cha: no \*PAR: lines"):
        read_chat(path)
    assert isinstance(read_chat(_write(tmp_path)), ChatTranscript)


def _write(tmp_path):
    path = tmp_path / "ok.cha"
    path.write_text(SAMPLE)
    return path
