import CZlib
import Foundation

/// zlib compression of large payloads, with a CRC-32 of the uncompressed bytes to catch corruption.
public enum PayloadCompression {
    /// Payloads whose JSON is longer than this many bytes are compressed (1 KiB).
    public static let threshold = 1024

    /// zlib (RFC 1950) compression at the default level.
    public static func compress(_ input: [UInt8]) -> [UInt8] {
        var length = compressBound(uLong(input.count))
        var output = [UInt8](repeating: 0, count: Int(length))
        let status = output.withUnsafeMutableBufferPointer { out in
            input.withUnsafeBufferPointer { inp in
                compress2(out.baseAddress, &length, inp.baseAddress, uLong(inp.count), Z_DEFAULT_COMPRESSION)
            }
        }
        precondition(status == Z_OK, "zlib compress2 failed with \(status)")  // only on out-of-memory
        output.removeSubrange(Int(length)...)
        return output
    }

    /// Inflates zlib data of unknown size, refusing outputs over `limit` bytes (a zip bomb guard).
    public static func decompress(_ input: [UInt8], limit: Int = 256 << 20) throws -> [UInt8] {
        var stream = z_stream()
        guard inflateInit_(&stream, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw EnvelopeError.corruptPayload("zlib inflateInit failed")
        }
        defer { inflateEnd(&stream) }
        var output = [UInt8]()
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        var status: Int32 = Z_OK
        try input.withUnsafeBufferPointer { inp in
            stream.next_in = UnsafeMutablePointer(mutating: inp.baseAddress)
            stream.avail_in = uInt(inp.count)
            repeat {
                let produced: Int = chunk.withUnsafeMutableBufferPointer { out in
                    stream.next_out = out.baseAddress
                    stream.avail_out = uInt(out.count)
                    status = inflate(&stream, Z_NO_FLUSH)
                    return out.count - Int(stream.avail_out)
                }
                guard status == Z_OK || status == Z_STREAM_END else {
                    throw EnvelopeError.corruptPayload("zlib data is corrupt (inflate status \(status))")
                }
                output.append(contentsOf: chunk[0..<produced])
                if output.count > limit { throw EnvelopeError.corruptPayload("payload inflates past \(limit) bytes") }
                if produced == 0 && stream.avail_in == 0 && status != Z_STREAM_END {
                    throw EnvelopeError.corruptPayload("zlib data is truncated")
                }
            } while status != Z_STREAM_END
        }
        return output
    }

    /// CRC-32 (zlib's, the same as Python's `zlib.crc32`).
    public static func crc32(_ bytes: [UInt8]) -> UInt32 {
        bytes.withUnsafeBufferPointer { UInt32(CZlib.crc32(0, $0.baseAddress, uInt($0.count))) }
    }
}
