//! `gpupack-device-plugin`: run the device plugin, or print the inventory.

fn main() {
    device_plugin::cli::main()
}
