use jetstream_wireformat::WireFormat;
#[test]
fn stub() {
    let _ = <jetstream_9p::Tframe as WireFormat>::decode(&mut &[7u8, 0, 0, 0, 100, 0, 0][..]);
}
