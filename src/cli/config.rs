//! Which `nanovm.toml` a command uses: `--config FILE`, else `$NANOVM_CONFIG`, else
//! `./nanovm.toml` when it exists; `--config none` uses none.

use crate::exec::tools::{Config, ConfigError};
use std::path::{Path, PathBuf};

pub const DEFAULT_CONFIG: &str = "nanovm.toml";

pub fn load(explicit: Option<&Path>) -> Result<Option<Config>, ConfigError> {
    let path: Option<PathBuf> = match explicit {
        Some(p) if p.as_os_str() == "none" => None,
        Some(p) => Some(p.to_owned()),
        None => match std::env::var_os("NANOVM_CONFIG") {
            Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
            _ => Some(PathBuf::from(DEFAULT_CONFIG)).filter(|p| p.is_file()),
        },
    };
    path.map(Config::load).transpose()
}
