"""Systems under comparison: one builder turns a System composition (YAML) into a step program."""
