//! `shadergrad adapters`: every GPU adapter of this machine, and the one chosen.

use shadergrad::gpu::{adapter_reports, enumerate_adapters, instance, select_adapter, ADAPTER_ENV};
use shadergrad::AdapterSelector;

/// Prints every adapter, then the one the other commands would use.
pub(crate) fn adapters_command(selector: &AdapterSelector) -> shadergrad::Result<()> {
    for report in adapter_reports()? {
        out!("{report}")?;
    }
    let chosen = select_adapter(enumerate_adapters(&instance())?, selector)?.get_info();
    out!(
        "\nselected: {} ({}); choose another with --adapter or {ADAPTER_ENV}=<index|backend|name>",
        chosen.name,
        chosen.backend
    )
}
