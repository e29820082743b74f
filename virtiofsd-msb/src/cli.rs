//! Command-line flags, spelled as virtiofsd spells them.
