"""Settings: the choices and checks, the schema with every default, the knob parameters,
and the YAML files they are kept in."""
