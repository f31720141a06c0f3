//! Commands passed through a Lua script: ferry's scripts (`exactly_once`,
//! two-way sync) take the write of one message as arguments and run it
//! inside the script, atomically with their bookkeeping.

use crate::error::MessageError;

/// Lua's `unpack` gives at most about 8,000 values: a command with more
/// arguments cannot go through a script (measured on Redis 7.0: 7,899
/// values pass and 8,100 fail).
pub(crate) const MAX_ARGS: usize = 7_800;

/// Refuses a message whose writes are too large for a script (a JSON
/// object with thousands of fields written with `hset`), instead of letting
/// Redis fail the whole call.
pub(crate) fn fits(commands: &[redis::Cmd], what: &str) -> Result<(), MessageError> {
    match commands.iter().map(|c| c.args_iter().len()).max() {
        Some(n) if n > MAX_ARGS => Err(MessageError::Unsupported(format!(
            "a command with {n} arguments is too large for {what} (at most {MAX_ARGS})"
        ))),
        _ => Ok(()),
    }
}

/// Appends `commands` to a script call: their number, then each command as
/// its argument count followed by its arguments. The scripts run them with
/// `redis.call(unpack(ARGV, i + 1, i + n))`.
pub(crate) fn append(call: &mut redis::Cmd, commands: &[redis::Cmd]) {
    call.arg(commands.len());
    for c in commands {
        call.arg(c.args_iter().len());
        for a in c.args_iter() {
            if let redis::Arg::Simple(bytes) = a {
                call.arg(bytes);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_too_large_for_a_script_is_refused_up_front() {
        let mut small = redis::cmd("HSET");
        small.arg("k").arg("f").arg("v");
        assert!(fits(&[small], "`exactly_once`").is_ok());
        let mut huge = redis::cmd("HSET");
        huge.arg("k");
        for i in 0..4000 {
            huge.arg(format!("f{i}")).arg("v");
        }
        let e = fits(&[huge], "`exactly_once`").unwrap_err().to_string();
        assert!(e.contains("too large for `exactly_once`"), "{e}");
    }
}
