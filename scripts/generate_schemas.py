"""Write challenge/schemas/<name>.schema.json for every result class of
``challenge.schemas.RESULT_CLASSES`` (run after changing a result, config or headline class)."""

from challenge.schemas import write_schemas

if __name__ == "__main__":
    for path in write_schemas():
        print(f"wrote {path}")
