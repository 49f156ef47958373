import CZlib
import Foundation

/// zlib compression of large payloads, with a CRC-32 of the uncompressed bytes to catch corruption.
public enum PayloadCompression {
    /// Payloads whose JSON is longer than this many bytes are compressed (1 KiB).
    public static let threshold = 1024

    /// The level envelopes are compressed at: zlib's fastest. Payloads are a few KiB of JSON that live in Redis for
    /// seconds; level 1 costs a third of the default level's CPU for a few per cent more bytes (measured on
    /// inference payloads, where compression was a tenth of the worker's CPU at the default level).
    public static let payloadLevel = Z_BEST_SPEED

    /// zlib (RFC 1950) compression at `level` (1 fastest … 9 smallest; any level inflates the same way).
    public static func compress(_ input: [UInt8], level: Int32 = payloadLevel) -> [UInt8] {
        // Level 0 (stored) is refused: zlib 1.2.13's deflateBound is one byte short for it with a non-default
        // window, and a stored payload is no use here.
        let level = min(9, max(1, level))
        // A window and hash table sized to the input: `compress2` always sets up a 32 KiB window and a 64 KiB hash
        // table and clears them, which for a 2 KiB payload costs more than compressing it. The stream is standard
        // zlib (its header records the window size), so any inflater reads it.
        var windowBits: Int32 = 9
        while windowBits < 15 && (1 << windowBits) < input.count { windowBits += 1 }
        let memLevel = max(1, min(8, windowBits - 6))
        var stream = z_stream()
        var status = deflateInit2_(&stream, level, Z_DEFLATED, windowBits, memLevel, Z_DEFAULT_STRATEGY,
                                   ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size))
        precondition(status == Z_OK, "zlib deflateInit2 failed with \(status)")  // only on out-of-memory
        defer { deflateEnd(&stream) }
        let bound = max(Int(deflateBound(&stream, uLong(input.count))), Int(compressBound(uLong(input.count))))
        let output = [UInt8](unsafeUninitializedCapacity: bound) { out, initialized in
            input.withUnsafeBufferPointer { inp in
                stream.next_in = UnsafeMutablePointer(mutating: inp.baseAddress)
                stream.avail_in = uInt(inp.count)
                stream.next_out = out.baseAddress
                stream.avail_out = uInt(bound)
                status = deflate(&stream, Z_FINISH)
            }
            initialized = status == Z_STREAM_END ? bound - Int(stream.avail_out) : 0
        }
        precondition(status == Z_STREAM_END, "zlib deflate failed with \(status)")  // the bound always fits
        return output
    }

    /// Inflates zlib data of unknown size, refusing outputs over `limit` bytes (a zip bomb guard).
    public static func decompress(_ input: [UInt8], limit: Int = 256 << 20) throws -> [UInt8] {
        let limit = max(0, min(limit, Int.max - 1))  // so `limit + 1` below cannot overflow
        var stream = z_stream()
        guard inflateInit_(&stream, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw EnvelopeError.corruptPayload("zlib inflateInit failed")
        }
        defer { inflateEnd(&stream) }
        // Inflate straight into the output, growing it geometrically: no zero-filled scratch buffer per call
        // (small payloads are the common case and were paying for a 64 KiB memset each).
        var output = [UInt8]()
        var capacity = min(max(4096, input.count * 4), limit + 1)
        var filled = 0
        var status: Int32 = Z_OK
        try input.withUnsafeBufferPointer { inp in
            stream.next_in = UnsafeMutablePointer(mutating: inp.baseAddress)
            stream.avail_in = uInt(inp.count)
            repeat {
                if filled == output.count {  // full (and at most `limit`: checked after every step below)
                    let grown = [UInt8](unsafeUninitializedCapacity: capacity) { buffer, initialized in
                        if filled > 0 { output.withUnsafeBufferPointer { buffer.baseAddress!.update(from: $0.baseAddress!, count: filled) } }
                        initialized = capacity
                    }
                    output = grown
                    capacity = min(capacity * 2, limit + 1)
                }
                let before = filled
                output.withUnsafeMutableBufferPointer { out in
                    let room = min(out.count - filled, Int(UInt32.max))
                    stream.next_out = out.baseAddress! + filled
                    stream.avail_out = uInt(room)
                    status = inflate(&stream, Z_NO_FLUSH)
                    filled += room - Int(stream.avail_out)
                }
                if status == Z_BUF_ERROR && stream.avail_in == 0 {
                    throw EnvelopeError.corruptPayload("zlib data is truncated")
                }
                // (There is always output room here, so Z_BUF_ERROR with input left means no progress: corrupt.)
                guard status == Z_OK || status == Z_STREAM_END else {
                    throw EnvelopeError.corruptPayload("zlib data is corrupt (inflate status \(status))")
                }
                if filled > limit { throw EnvelopeError.corruptPayload("payload inflates past \(limit) bytes") }
                if filled == before && stream.avail_in == 0 && status != Z_STREAM_END {
                    throw EnvelopeError.corruptPayload("zlib data is truncated")
                }
            } while status != Z_STREAM_END
        }
        output.removeSubrange(filled...)
        return output
    }

    /// Payloads at least this long are sampled before being compressed whole (16 KiB).
    public static let sampleThreshold = 16 << 10

    /// `input` compressed for an envelope, or nil when compressing does not at least halve the envelope's share of it
    /// (the compressed bytes travel as base64, 4/3 of their size, so zlib must bring them to 3/8).
    ///
    /// Why halve, not merely shrink: the cost is time on both sides — deflate at level 1 runs at ~100 MB/s on
    /// high-entropy text, and the worker inflates, checks the CRC and decodes base64 again — against bytes that
    /// cost little on a local network. JSON rows of float numbers (digits with little repetition) shrink to about
    /// 0.65 of their size as base64: compressing 340 KB of them cost the producer ~4 ms and the worker ~2 ms, more
    /// than parsing them, to save a third of the bytes (docs/BENCHMARKS.md, "Binary tensors and JSON numbers").
    /// Repetitive JSON (the same keys row after row) shrinks far more and is still compressed.
    /// Payloads of 16 KiB and more are judged first on a 4 KiB sample from their middle, so that neither a tensor's
    /// base64 data nor rows of numbers are deflated whole to find out.
    public static func compressIfWorthIt(_ input: UnsafeBufferPointer<UInt8>) -> [UInt8]? {
        let sampleSize = 4096
        if input.count >= sampleThreshold {
            let start = (input.count - sampleSize) / 2
            let sample = Array(UnsafeBufferPointer(rebasing: input[start..<(start + sampleSize)]))
            if compress(sample).count * 8 > sampleSize * 3 { return nil }
        }
        let output = compress(Array(input))
        return (output.count * 4 / 3 + 4) * 2 <= input.count ? output : nil
    }

    /// `compressIfWorthIt` of an array.
    public static func compressIfWorthIt(_ input: [UInt8]) -> [UInt8]? {
        input.withUnsafeBufferPointer { compressIfWorthIt($0) }
    }

    /// CRC-32 (zlib's, the same as Python's `zlib.crc32`).
    public static func crc32(_ bytes: [UInt8]) -> UInt32 {
        bytes.withUnsafeBufferPointer { UInt32(CZlib.crc32(0, $0.baseAddress, uInt($0.count))) }
    }
}
