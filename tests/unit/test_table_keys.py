"""Table keys keep their bytes whichever JSON library Faust picked (orjson is installed)."""

from __future__ import annotations

from faust.serializers import codecs

from streams.runtime.tables import KEY_CODEC


def test_a_non_ascii_table_key_is_written_as_json_escapes_and_read_back() -> None:
    key = 'lagerhaus-nord/Müller "BK" \\ 1'
    raw = codecs.dumps(KEY_CODEC, key)
    # What Faust's json codec wrote before orjson was installed: ASCII only.
    assert raw == b'"lagerhaus-nord/M\\u00fcller \\"BK\\" \\\\ 1"'
    assert codecs.loads(KEY_CODEC, raw) == key


def test_faust_own_json_codec_would_write_other_bytes_for_the_same_key() -> None:
    # Why the tables pin their key codec: with orjson, Faust's "json" writes UTF-8.
    key = "tenant/Müller"
    assert codecs.dumps("json", key) != codecs.dumps(KEY_CODEC, key)
