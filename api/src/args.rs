//! Job arguments, handed from the command line to the job's build function (Flink's `ParameterTool`).

use crate::error::{Error, Result};
use std::str::FromStr;

/// The arguments after `--` on `weir run` / `weir local run`.
///
/// Understands `--name value`, `--name=value` and bare `--flag`; everything else is positional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobArgs {
    raw: Vec<String>,
}

impl JobArgs {
    /// Wraps the raw argument list.
    pub fn new(raw: Vec<String>) -> Self {
        Self { raw }
    }

    /// The raw arguments, as given.
    pub fn raw(&self) -> &[String] {
        &self.raw
    }

    /// The value of `--name` (`--name value` or `--name=value`); `None` when absent.
    pub fn get(&self, name: &str) -> Option<&str> {
        let flag = format!("--{name}");
        let mut iter = self.raw.iter();
        while let Some(arg) = iter.next() {
            if *arg == flag {
                return iter.next().map(String::as_str).filter(|v| !v.starts_with("--"));
            }
            if let Some(value) = arg.strip_prefix(&flag).and_then(|rest| rest.strip_prefix('=')) {
                return Some(value);
            }
        }
        None
    }

    /// Whether `--name` was given at all (as a flag or with a value).
    pub fn has(&self, name: &str) -> bool {
        let flag = format!("--{name}");
        self.raw.iter().any(|arg| *arg == flag || arg.starts_with(&format!("{flag}=")))
    }

    /// The value of `--name`, or an [`Error::InvalidArgument`] that says it is required.
    pub fn required(&self, name: &str) -> Result<&str> {
        self.get(name).ok_or_else(|| Error::InvalidArgument(format!("--{name} is required")))
    }

    /// The value of `--name` parsed as `T`, or `default` when absent.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the flag and the bad value when it does not parse.
    pub fn parse_or<T: FromStr>(&self, name: &str, default: T) -> Result<T>
    where
        T::Err: std::fmt::Display,
    {
        match self.get(name) {
            None if self.has(name) => Err(Error::InvalidArgument(format!("--{name} needs a value"))),
            None => Ok(default),
            Some(value) => {
                value.parse().map_err(|e: T::Err| Error::InvalidArgument(format!("--{name} {value:?}: {e}")))
            }
        }
    }

    /// The value of `--name` parsed as `T`; the flag is required.
    pub fn parse_required<T: FromStr>(&self, name: &str) -> Result<T>
    where
        T::Err: std::fmt::Display,
    {
        if self.get(name).is_none() && self.has(name) {
            return Err(Error::InvalidArgument(format!("--{name} needs a value")));
        }
        let value = self.required(name)?;
        value.parse().map_err(|e: T::Err| Error::InvalidArgument(format!("--{name} {value:?}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> JobArgs {
        JobArgs::new(list.iter().map(|s| (*s).to_owned()).collect())
    }

    #[test]
    fn reads_both_spellings_and_flags() {
        let a = args(&["--input", "in.txt", "--events=10", "--verbose"]);
        assert_eq!(a.get("input"), Some("in.txt"));
        assert_eq!(a.parse_or("events", 0u64).unwrap(), 10);
        assert!(a.has("verbose"));
        assert_eq!(a.get("verbose"), None);
        assert_eq!(a.parse_or("rate", 5u64).unwrap(), 5);
    }

    #[test]
    fn bad_values_name_the_flag() {
        let a = args(&["--events", "ten"]);
        let err = a.parse_or("events", 0u64).unwrap_err().to_string();
        assert!(err.contains("--events") && err.contains("ten"), "{err}");
        assert!(args(&[]).required("input").unwrap_err().to_string().contains("--input is required"));
    }
}
