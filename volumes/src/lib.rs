//! Named persistent volumes.
//!
//! For now this crate holds the volume-name rules that every other part of
//! the project must agree on; the store itself is tracked in the issues.

/// Longest accepted volume name, in bytes.
pub const MAX_NAME_LEN: usize = 63;

/// Why a volume name was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameError {
    /// The name is empty.
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`].
    TooLong(usize),
    /// The name holds a character outside `[A-Za-z0-9_.-]`.
    BadChar(char),
    /// The name starts with `.` or `-`, which would read as a path or a flag.
    BadStart(char),
}

impl std::fmt::Display for NameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NameError::Empty => write!(f, "volume name is empty"),
            NameError::TooLong(n) => write!(
                f,
                "volume name is {n} bytes, at most {MAX_NAME_LEN} allowed"
            ),
            NameError::BadChar(c) => write!(
                f,
                "volume name holds {c:?}; use letters, digits, '_', '.', '-'"
            ),
            NameError::BadStart(c) => write!(f, "volume name must not start with {c:?}"),
        }
    }
}

impl std::error::Error for NameError {}

/// Checks a volume name: 1..=63 bytes of `[A-Za-z0-9_.-]`, not starting
/// with `.` or `-` (so `..`, `/`, and NUL can never appear).
pub fn validate_name(name: &str) -> Result<(), NameError> {
    let first = name.chars().next().ok_or(NameError::Empty)?;
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong(name.len()));
    }
    if first == '.' || first == '-' {
        return Err(NameError::BadStart(first));
    }
    match name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        Some(c) => Err(NameError::BadChar(c)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names() {
        assert_eq!(validate_name("cache"), Ok(()));
        assert_eq!(validate_name("build-2.x_y"), Ok(()));
    }

    #[test]
    fn refuses_path_like_names() {
        assert_eq!(validate_name(""), Err(NameError::Empty));
        assert_eq!(validate_name(".."), Err(NameError::BadStart('.')));
        assert_eq!(validate_name("a/b"), Err(NameError::BadChar('/')));
        assert_eq!(validate_name("a\0b"), Err(NameError::BadChar('\0')));
        assert_eq!(validate_name("-rf"), Err(NameError::BadStart('-')));
        assert_eq!(validate_name(&"x".repeat(64)), Err(NameError::TooLong(64)));
    }
}
