"""TableSchema and the dataset facts read with it from metadata.json."""

import json

from recsys_emb.data.parquet import TableSchema, read_metadata, schema_from_metadata


def test_oov_ids_come_from_metadata_and_stay_out_of_schemas_without_them(small_processed):
    meta = read_metadata(small_processed)
    schema = schema_from_metadata(meta)
    assert schema.oov_ids == meta["oov_ids"] and set(schema.oov_ids) == set(schema.sparse)
    assert "oov_ids" not in meta["schema"]  # the preprocessor keeps them beside the schema
    assert TableSchema.from_dict(schema.to_dict()) == schema
    plain = TableSchema.from_dict(meta["schema"])
    assert plain.oov_ids == {} and "oov_ids" not in plain.to_dict()
    # keys the schema does not have are left out; a schema that names its own is kept
    extra = dict(meta, oov_ids={**meta["oov_ids"], "not_a_key": 3})
    assert schema_from_metadata(extra).oov_ids == meta["oov_ids"]
    own = dict(meta, schema={**meta["schema"], "oov_ids": {"C1": 0}})
    assert schema_from_metadata(json.loads(json.dumps(own))).oov_ids == {"C1": 0}
