//! EDF / EDF+ / BDF reader. (Being written.)

use std::path::Path;

use crate::error::{Error, Result};
use crate::io::Recording;

/// Parse an EDF, EDF+ or BDF file already read into memory.
pub fn parse(_bytes: &[u8], path: &Path) -> Result<Recording> {
    Err(Error::format("EDF", path, "EDF reader not built yet"))
}
