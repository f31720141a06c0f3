//! Everything wrong with one config file, rendered with file:line:column.

use std::fmt;
use std::path::PathBuf;

use crate::problem::Problem;

/// Everything wrong with one config file.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    pub text: String,
    pub problems: Vec<Problem>,
}

impl ConfigError {
    pub fn io(file: PathBuf, e: std::io::Error) -> Self {
        Self {
            problems: vec![Problem {
                span: None,
                path: None,
                message: format!("cannot read the config file: {e}"),
                help: None,
            }],
            file,
            text: String::new(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.display().to_string();
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "error: {}", p.render(&file, &self.text))?;
        }
        Ok(())
    }
}
