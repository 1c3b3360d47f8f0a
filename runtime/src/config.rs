//! Loading a process's configuration: defaults, then a TOML file, then `WEIR_*` environment
//! variables, then command-line flags (applied by the caller), each overriding the one before.

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::Path;

/// A configuration that cannot be loaded (the user's mistake).
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

/// Loads `T`: its `Default`, overridden by the TOML `file` (if given), overridden by environment
/// variables named `WEIR_<KEY>` for each top-level key (for example `WEIR_REST_ADDR` for
/// `rest_addr`).
///
/// # Errors
/// An unreadable file, invalid TOML, an unknown key (with `#[serde(deny_unknown_fields)]`), or a
/// value of the wrong type, each naming the file, key or variable.
pub fn load<T: Serialize + DeserializeOwned + Default>(file: Option<&Path>) -> Result<T, ConfigError> {
    load_with_env(file, |name| std::env::var(name).ok())
}

/// [`load`] with an explicit environment, for tests.
pub fn load_with_env<T: Serialize + DeserializeOwned + Default>(
    file: Option<&Path>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<T, ConfigError> {
    let mut config: T = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
            toml::from_str(&text)
                .map_err(|e| ConfigError(format!("{}: {}", path.display(), one_line(&e.to_string()))))?
        }
        None => T::default(),
    };
    let mut table = toml::Table::try_from(&config).map_err(|e| ConfigError(e.to_string()))?;
    let mut changed = false;
    let keys: Vec<String> = table.keys().cloned().collect();
    for key in keys {
        let name = format!("WEIR_{}", key.to_ascii_uppercase());
        let Some(text) = env(&name) else { continue };
        let value = match table.get(&key) {
            Some(toml::Value::Integer(_)) => toml::Value::Integer(
                text.trim().parse().map_err(|_| ConfigError(format!("{name}={text:?} is not an integer")))?,
            ),
            Some(toml::Value::Float(_)) => toml::Value::Float(
                text.trim().parse().map_err(|_| ConfigError(format!("{name}={text:?} is not a number")))?,
            ),
            Some(toml::Value::Boolean(_)) => toml::Value::Boolean(
                text.trim().parse().map_err(|_| ConfigError(format!("{name}={text:?} is not true or false")))?,
            ),
            _ => toml::Value::String(text),
        };
        table.insert(key, value);
        changed = true;
    }
    if changed {
        config = table.try_into().map_err(|e: toml::de::Error| ConfigError(one_line(&e.to_string())))?;
    }
    Ok(config)
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Sample {
        rest_addr: String,
        slots: u32,
    }

    impl Default for Sample {
        fn default() -> Self {
            Self { rest_addr: "127.0.0.1:8081".into(), slots: 1 }
        }
    }

    #[test]
    fn file_then_environment_override_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("weir.toml");
        std::fs::write(&file, "slots = 4\n").unwrap();
        let config: Sample = load_with_env(Some(&file), |_| None).unwrap();
        assert_eq!(config, Sample { rest_addr: "127.0.0.1:8081".into(), slots: 4 });
        let config: Sample = load_with_env(Some(&file), |k| (k == "WEIR_SLOTS").then(|| "8".to_owned())).unwrap();
        assert_eq!(config.slots, 8);
    }

    #[test]
    fn mistakes_name_the_key_or_variable() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("weir.toml");
        std::fs::write(&file, "slotz = 4\n").unwrap();
        let err = load::<Sample>(Some(&file)).unwrap_err().to_string();
        assert!(err.contains("slotz"), "{err}");
        let err = load_with_env::<Sample>(None, |k| (k == "WEIR_SLOTS").then(|| "many".to_owned())).unwrap_err();
        assert!(err.to_string().contains("WEIR_SLOTS"), "{err}");
        assert!(load::<Sample>(Some(Path::new("/nonexistent/weir.toml"))).is_err());
    }
}
