//! Tools from the config file (`nanovm.toml`): `command`, `http` and `mock` tools, the
//! `[policy]` section, and the catalog the checker uses.
