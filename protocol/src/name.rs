//! Validation of the relative file names a sender offers.
//!
//! A receiver joins the name onto its receive directory, so the name must not be able to leave
//! it: no absolute path, no `..`, no empty or `.` component. Names are UTF-8 without control
//! characters (C0 and DEL: no NUL, no newline or escape sequences in logs and terminals), and
//! bounded so they fit one control message. (Symlinks planted inside the directory are the
//! receiver's file-system concern, not something a name check can see.)
//!
//! Names are also kept out of the receiver's own name space: it keeps temporary and partial
//! files in the destination (`.rdmaft-<host>-<pid>-<n>.part`, `.rdmaft-partial-<hash>`), and an
//! offered name that could be one of them would let a sender swap bytes in under another
//! connection's pending file. [`validate_name`] refuses any component that starts with
//! [`RESERVED_PREFIX`]; on the wire such a header still decodes, and the receiver rejects the
//! file (`INVALID_NAME`) rather than the session.

use core::fmt;

/// Longest accepted name in bytes; a header with its name fits one control buffer.
pub const MAX_NAME_LEN: usize = 4000;
/// Longest accepted path component in bytes (Linux `NAME_MAX`).
pub const MAX_COMPONENT_LEN: usize = 255;
/// The start of the receiver's own file names in its destination: no component of an offered
/// name may start with it, ASCII case ignored (so that a case-insensitive file system cannot
/// map an offered name onto one either).
pub const RESERVED_PREFIX: &str = ".rdmaft-";

/// Why a name was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameError {
    /// The name is empty.
    Empty,
    /// Longer than [`MAX_NAME_LEN`], or a component longer than [`MAX_COMPONENT_LEN`].
    TooLong,
    /// Not valid UTF-8.
    NotUtf8,
    /// Contains a NUL byte.
    Nul,
    /// Contains another control character (U+0001..=U+001F or U+007F).
    Control,
    /// Starts with `/`.
    Absolute,
    /// Has a `..` component.
    ParentDir,
    /// Has an empty (`a//b`, trailing `/`) or `.` component.
    EmptyComponent,
    /// Has a component starting with [`RESERVED_PREFIX`] (the receiver's temporary files).
    Reserved,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameError::Empty => "empty name",
            NameError::TooLong => "name or component too long",
            NameError::NotUtf8 => "name is not UTF-8",
            NameError::Nul => "name contains NUL",
            NameError::Control => "name contains a control character",
            NameError::Absolute => "name is absolute",
            NameError::ParentDir => "name has a '..' component",
            NameError::EmptyComponent => "name has an empty or '.' component",
            NameError::Reserved => {
                "name has a component starting with '.rdmaft-', which is reserved for the \
                 receiver's temporary files"
            }
        })
    }
}

/// Checks `raw` and returns it as `&str` if it is a safe relative name outside the reserved
/// name space: what a sender may offer.
pub fn validate_name(raw: &[u8]) -> Result<&str, NameError> {
    let name = validate_syntax(raw)?;
    if is_reserved(name) {
        return Err(NameError::Reserved);
    }
    Ok(name)
}

/// Whether a component of `name` starts with [`RESERVED_PREFIX`] (ASCII case ignored).
pub(crate) fn is_reserved(name: &str) -> bool {
    let prefix = RESERVED_PREFIX.as_bytes();
    name.split('/').any(|c| {
        c.as_bytes()
            .get(..prefix.len())
            .is_some_and(|start| start.eq_ignore_ascii_case(prefix))
    })
}

/// Every check of [`validate_name`] but the reserved name space: what a header must pass to
/// decode (a reserved name then fails the file, not the session).
// spec: [name.valid]
pub(crate) fn validate_syntax(raw: &[u8]) -> Result<&str, NameError> {
    if raw.is_empty() {
        return Err(NameError::Empty);
    }
    if raw.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong);
    }
    if raw.contains(&0) {
        return Err(NameError::Nul);
    }
    // Bytes below 0x20 and 0x7F are control characters in ASCII and never part of a multi-byte
    // UTF-8 sequence, so a byte scan finds exactly the C0 and DEL characters.
    if raw.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return Err(NameError::Control);
    }
    let name = core::str::from_utf8(raw).map_err(|_| NameError::NotUtf8)?;
    if name.starts_with('/') {
        return Err(NameError::Absolute);
    }
    for component in name.split('/') {
        match component {
            "" | "." => return Err(NameError::EmptyComponent),
            ".." => return Err(NameError::ParentDir),
            c if c.len() > MAX_COMPONENT_LEN => return Err(NameError::TooLong),
            _ => {}
        }
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_and_nested_names() {
        assert_eq!(validate_name(b"a.txt"), Ok("a.txt"));
        assert_eq!(validate_name(b"dir/sub/f"), Ok("dir/sub/f"));
        assert_eq!(validate_name("ünï/cødé".as_bytes()), Ok("ünï/cødé"));
        assert_eq!(validate_name(b"..hidden/x.."), Ok("..hidden/x.."));
    }

    #[test]
    // spec-test: [name.valid]
    fn refuses_escapes_and_garbage() {
        assert_eq!(validate_name(b""), Err(NameError::Empty));
        assert_eq!(validate_name(b"/etc/passwd"), Err(NameError::Absolute));
        assert_eq!(validate_name(b".."), Err(NameError::ParentDir));
        assert_eq!(validate_name(b"a/../../b"), Err(NameError::ParentDir));
        assert_eq!(validate_name(b"a//b"), Err(NameError::EmptyComponent));
        assert_eq!(validate_name(b"a/"), Err(NameError::EmptyComponent));
        assert_eq!(validate_name(b"./a"), Err(NameError::EmptyComponent));
        assert_eq!(validate_name(b"a\0b"), Err(NameError::Nul));
        for c in [1u8, b'\n', b'\t', 0x1b, 0x1f, 0x7f] {
            assert_eq!(
                validate_name(&[b'a', c, b'b']),
                Err(NameError::Control),
                "{c:#x}"
            );
        }
        // U+0080..U+009F (C1) are left alone: they are ordinary UTF-8 characters here.
        assert!(validate_name("a\u{85}b".as_bytes()).is_ok());
        assert_eq!(validate_name(b" a~"), Ok(" a~"));
        assert_eq!(validate_name(&[0xff, 0xfe]), Err(NameError::NotUtf8));
        assert_eq!(
            validate_name(&[b'a'; MAX_NAME_LEN + 1]),
            Err(NameError::TooLong)
        );
        assert_eq!(
            validate_name(&[b'a'; MAX_COMPONENT_LEN + 1]),
            Err(NameError::TooLong)
        );
        assert!(validate_name(&[b'a'; MAX_COMPONENT_LEN]).is_ok());
        let mut longest = [b'a'; MAX_NAME_LEN];
        for i in (MAX_COMPONENT_LEN..MAX_NAME_LEN).step_by(MAX_COMPONENT_LEN + 1) {
            longest[i] = b'/';
        }
        assert!(
            validate_name(&longest).is_ok(),
            "exactly MAX_NAME_LEN bytes is allowed"
        );
    }

    #[test]
    // spec-test: [name.reserved]
    fn refuses_the_receivers_own_name_space() {
        for name in [
            ".rdmaft-1234-5.part",
            ".rdmaft-partial-00ff00ff00ff00ff",
            "dir/.rdmaft-1-2.part",
            ".rdmaft-/x",
            ".RDMAFT-1-2.part",
            "a/.RdMaFt-x/b",
            ".rdmaft-",
        ] {
            assert_eq!(
                validate_name(name.as_bytes()),
                Err(NameError::Reserved),
                "{name}"
            );
            assert_eq!(validate_syntax(name.as_bytes()), Ok(name), "{name}");
        }
        for name in [
            "rdmaft-1-2.part",
            "a.rdmaft-1-2.part",
            ".rdmaft",
            ".rdmaftx-1",
            "..rdmaft-1",
            "x/.rdmaf-1",
        ] {
            assert_eq!(validate_name(name.as_bytes()), Ok(name), "{name}");
        }
        // The syntax is checked first: an escape is reported as such.
        assert_eq!(
            validate_name(b"/.rdmaft-1-2.part"),
            Err(NameError::Absolute)
        );
        assert_eq!(validate_name(b".rdmaft-x/../y"), Err(NameError::ParentDir));
    }
}
