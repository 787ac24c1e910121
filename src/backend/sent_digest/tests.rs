use super::*;
use crate::checksum::FileDigest;
use crc_fast::CrcAlgorithm;

fn resource(crc64nvme: Option<&str>, md5: Option<&str>) -> FileResource {
    FileResource {
        kind: "drive#file".into(),
        id: "0123456789abcdef0123456789abcdef".into(),
        name: "a.bin".into(),
        mime_type: "application/octet-stream".into(),
        size_bytes: 9,
        md5_checksum: md5.map(str::to_owned),
        crc64nvme: crc64nvme.map(str::to_owned),
    }
}

fn bytes(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// This is a regression test that ensures the CRC-64 mismatch reads as it
/// did before MD5 came (the simulation's trace hashes it).
#[test]
fn verify_catches_a_mismatch_and_skips_an_unknown_digest() {
    let sent = Some(SentDigest {
        value: Running::Crc64(0x00112233aabbccdd),
        len_bytes: 9,
    });
    let kind = FileDigestKind::Crc64Nvme;
    assert_eq!(
        verify(kind, &sent, &resource(Some("00112233aabbccdd"), None)),
        Ok(())
    );
    let err = verify(kind, &sent, &resource(Some("00112233aabbccdc"), None))
        .expect_err("a flipped digest");
    assert_eq!(
        err.to_string(),
        "drive_checksum_mismatch: the drive's 9-byte file has CRC-64/NVME 00112233aabbccdc, the backend sent 00112233aabbccdd"
    );
    assert_eq!(
        verify(kind, &None, &resource(Some("anything"), None)),
        Ok(())
    );
}

#[test]
fn an_md5_mismatch_or_a_missing_md5_carries_both_sides() {
    let mut md5 = Md5Digest::default();
    md5.update(b"123456789");
    let ours = md5.hex();
    let sent = Some(SentDigest {
        value: Running::Md5(Box::new(md5)),
        len_bytes: 9,
    });
    let kind = FileDigestKind::Md5;
    assert_eq!(verify(kind, &sent, &resource(None, Some(&ours))), Ok(()));
    let theirs = "0123456789abcdef0123456789abcdef";
    let err = verify(kind, &sent, &resource(Some("00"), Some(theirs))).expect_err("differs");
    assert_eq!(err.drive.as_deref(), Some(theirs));
    assert_eq!(err.sent, ours);
    assert_eq!(
        err.to_string(),
        format!("drive_checksum_mismatch: the drive's 9-byte file has MD5 {theirs}, the backend sent {ours}")
    );
    let err = verify(kind, &sent, &resource(Some("00"), None)).expect_err("missing");
    assert!(err.to_string().contains("has no md5Checksum"), "{err}");
    // A CRC the backend did not ask about is not an MD5.
    let crc_only = verify(kind, &sent, &resource(Some("00112233aabbccdd"), None));
    assert!(crc_only.is_err());
}

/// The piece's digests at each 256 KiB boundary are the digests of the
/// whole prefix, for both kinds, from a base in the middle of the file.
#[test]
fn in_flight_digests_are_the_prefix_digests_at_each_boundary() {
    let unit = DRIVE_CHUNK_ALIGN_BYTES as usize;
    let data = bytes(3 * unit + 1000);
    let first = unit;
    // Frames that do not line up with the boundaries.
    let frames: Vec<Bytes> = data[first..]
        .chunks(100_000)
        .map(Bytes::copy_from_slice)
        .collect();
    let crc_base = Some(SentDigest {
        value: Running::Crc64(crc_fast::checksum(CrcAlgorithm::Crc64Nvme, &data[..first])),
        len_bytes: first as u64,
    });
    let mut md5_base = Md5Digest::default();
    md5_base.update(&data[..first]);
    let md5_base = Some(SentDigest {
        value: Running::Md5(Box::new(md5_base)),
        len_bytes: first as u64,
    });
    for base in [crc_base, md5_base] {
        let points = in_flight(base, &frames);
        let ends: Vec<u64> = points.iter().map(|p| p.len_bytes).collect();
        let expected_ends = [2 * unit, 3 * unit, data.len()].map(|e| e as u64);
        assert_eq!(ends, expected_ends);
        for point in points {
            let prefix = &data[..point.len_bytes as usize];
            let expected = match point.value {
                Running::Crc64(_) => {
                    let mut d = FileDigest::default();
                    d.update(prefix);
                    d.hex()
                }
                Running::Md5(_) => {
                    let mut d = Md5Digest::default();
                    d.update(prefix);
                    d.hex()
                }
            };
            assert_eq!(point.value.hex(), expected, "at {}", point.len_bytes);
        }
    }
    assert!(in_flight(None, &frames).is_empty());
}

#[test]
fn digests_survive_their_persisted_form() {
    let mut md5 = Md5Digest::default();
    md5.update(&bytes(1000));
    let md5_point = SentDigest {
        value: Running::Md5(Box::new(md5.clone())),
        len_bytes: 1000,
    };
    let sent = Some(SentDigest {
        value: Running::Md5(Box::new(md5)),
        len_bytes: 1000,
    });
    let record = saved(&sent, &[md5_point], 1000);
    assert_eq!(record.sent_crc64, None);
    assert!(record.sent_md5.is_some());
    let (back, in_flight) = restored(&record, 1000);
    let hex = |s: &Sent| s.as_ref().map(|s| (s.value.hex(), s.len_bytes));
    assert_eq!(hex(&back), hex(&sent));
    assert_eq!(in_flight.len(), 1);
    // A digest that does not cover the committed prefix is not saved; one
    // whose saved state says another length is not believed.
    assert_eq!(saved(&sent, &[], 999).sent_md5, None);
    assert!(restored(&record, 999).0.is_none());

    let crc = Some(SentDigest {
        value: Running::Crc64(42),
        len_bytes: 7,
    });
    let record = saved(&crc, &[], 7);
    assert_eq!(record.sent_crc64, Some(42));
    assert_eq!(record.sent_md5, None);
    let (back, _) = restored(&record, 7);
    assert_eq!(hex(&back), hex(&crc));
}
