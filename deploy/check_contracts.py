"""Checks proto/events/*.schema.json: each is a valid JSON Schema 2020-12 with the $id and event
type its file name promises, and its examples validate against it and against the envelope.

    .local/deploy-venv/bin/python deploy/check_contracts.py [proto/events]

Prints one line on success; every problem and exit status 1 otherwise.
"""

import json
import pathlib
import sys

import jsonschema

ID_PREFIX = "urn:chat:schema:event:"
DRAFT = "https://json-schema.org/draft/2020-12/schema"


def check(events_dir):
    problems = []
    files = sorted(events_dir.glob("*.schema.json"))
    if not files:
        return [f"{events_dir}: no *.schema.json files"], 0
    schemas = {}
    for path in files:
        try:
            schemas[path] = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            problems.append(f"{path}: not JSON: {e}")
    envelope = next((s for p, s in schemas.items() if p.name == "envelope.schema.json"), None)
    if envelope is None:
        problems.append(f"{events_dir}: envelope.schema.json is missing")
    ids = {}
    examples = 0
    for path, schema in schemas.items():
        stem = path.name[: -len(".schema.json")]
        if schema.get("$schema") != DRAFT:
            problems.append(f"{path}: $schema is {schema.get('$schema')!r}, want {DRAFT}")
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as e:
            problems.append(f"{path}: not a valid JSON Schema: {e.message} at {list(e.path)}")
            continue
        want_id = ID_PREFIX + stem
        if schema.get("$id") != want_id:
            problems.append(f"{path}: $id is {schema.get('$id')!r}, want {want_id!r}")
        if schema.get("$id") in ids:
            problems.append(f"{path}: $id also used by {ids[schema['$id']]}")
        ids[schema.get("$id")] = path
        if stem == "envelope":
            continue
        type_const = schema.get("properties", {}).get("type", {}).get("const")
        if type_const != stem:
            problems.append(f"{path}: properties.type.const is {type_const!r}, want {stem!r}")
        validator = jsonschema.Draft202012Validator(schema)
        for i, example in enumerate(schema.get("examples", [])):
            examples += 1
            for err in validator.iter_errors(example):
                problems.append(f"{path}: examples[{i}] fails its schema: {err.message} at {list(err.path)}")
            if envelope is not None:
                for err in jsonschema.Draft202012Validator(envelope).iter_errors(example):
                    problems.append(f"{path}: examples[{i}] fails the envelope: {err.message}")
    return problems, examples


def main(argv):
    events_dir = pathlib.Path(argv[1] if len(argv) > 1 else "proto/events")
    problems, examples = check(events_dir)
    if problems:
        for p in problems:
            print(f"check_contracts: {p}", file=sys.stderr)
        return 1
    n = len(list(events_dir.glob("*.schema.json")))
    print(f"{events_dir}: {n} event schemas valid (JSON Schema 2020-12), {examples} examples valid")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
