//! XDF reader. (Being written.)

use std::path::Path;

use crate::error::{Error, Result};
use crate::io::Recording;

/// Parse an XDF file already read into memory.
pub fn parse(_bytes: &[u8], path: &Path) -> Result<Recording> {
    Err(Error::format("XDF", path, "XDF reader not built yet"))
}
