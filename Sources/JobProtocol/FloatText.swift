#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Numbers as JSON text, fast: float32 printed with the shortest digits that read back to the same float32 (Ryū,
/// Ulf Adams, PLDI 2018) straight into a byte buffer, and decimal text read without `strtod` when it can be
/// (Clinger's exact fast path), with `strtod` as the correct fallback.
///
/// Why: an inference answer is thousands of floats. `Float.description` finds the same digits but through a
/// `String` per value; the encoder then parsed each text back with `strtod`; the parser made a `String` per number
/// to call `strtod`. docs/BENCHMARKS.md ("JSON numbers") has the figures before and after.
public enum FloatText {
    // MARK: - Printing (Ryū for binary32)

    static let pow5InvBitCount = 59
    static let pow5BitCount = 61

    /// ⌊2^(bitlength(5^i) − 1 + 59) / 5^i⌋ + 1, i < 31 (Ryū's FLOAT_POW5_INV_SPLIT), computed once.
    static let pow5InvSplit: [UInt64] = (0..<31).map { i in
        var power: UInt128 = 1
        for _ in 0..<i { power *= 5 }
        let bits = 128 - power.leadingZeroBitCount
        let j = bits - 1 + pow5InvBitCount
        // 5^i is odd and above 1 for i ≥ 1, so ⌊(2^128 − 1) / 5^i⌋ = ⌊2^128 / 5^i⌋.
        let quotient = j == 128 ? UInt128.max / power : (UInt128(1) << j) / power
        return UInt64(quotient + 1)
    }

    /// 5^i scaled to 61 bits, i < 47 (Ryū's FLOAT_POW5_SPLIT).
    static let pow5Split: [UInt64] = (0..<47).map { i in
        var power: UInt128 = 1
        for _ in 0..<i { power *= 5 }
        let bits = 128 - power.leadingZeroBitCount
        return bits >= pow5BitCount ? UInt64(power >> (bits - pow5BitCount)) : UInt64(power << (pow5BitCount - bits))
    }

    @inline(__always) static func pow5bits(_ e: Int) -> Int { Int((UInt32(e) &* 1_217_359) >> 19) + 1 }
    @inline(__always) static func log10Pow2(_ e: Int) -> Int { Int((UInt32(e) &* 78_913) >> 18) }
    @inline(__always) static func log10Pow5(_ e: Int) -> Int { Int((UInt32(e) &* 732_923) >> 20) }

    @inline(__always) static func pow5Factor(_ value: UInt32) -> Int {
        var value = value, count = 0
        while value % 5 == 0 {
            value /= 5
            count += 1
        }
        return count
    }

    @inline(__always) static func mulShift(_ m: UInt32, _ factor: UInt64, _ shift: Int) -> UInt32 {
        let low = UInt64(m) &* (factor & 0xFFFF_FFFF)
        let high = UInt64(m) &* (factor >> 32)
        let sum = (low >> 32) &+ high
        return UInt32(truncatingIfNeeded: sum >> (shift - 32))
    }

    /// The shortest decimal `digits × 10^exponent` that reads back as `value` (finite, non-zero magnitude).
    @inline(__always)
    static func shortest(_ value: Float) -> (digits: UInt32, exponent: Int) {
        let bits = value.bitPattern
        let ieeeMantissa = bits & 0x7F_FFFF
        let ieeeExponent = Int((bits >> 23) & 0xFF)
        let e2: Int
        let m2: UInt32
        if ieeeExponent == 0 {
            e2 = 1 - 127 - 23 - 2
            m2 = ieeeMantissa
        } else {
            e2 = ieeeExponent - 127 - 23 - 2
            m2 = ieeeMantissa | (1 << 23)
        }
        let even = m2 & 1 == 0
        let acceptBounds = even
        let mv = 4 &* m2
        let mp = 4 &* m2 &+ 2
        let mmShift: UInt32 = ieeeMantissa != 0 || ieeeExponent <= 1 ? 1 : 0
        let mm = 4 &* m2 &- 1 &- mmShift

        var vr: UInt32, vp: UInt32, vm: UInt32
        let e10: Int
        var vmIsTrailingZeros = false, vrIsTrailingZeros = false
        var lastRemovedDigit: UInt32 = 0
        if e2 >= 0 {
            let q = log10Pow2(e2)
            e10 = q
            let k = pow5InvBitCount + pow5bits(q) - 1
            let i = -e2 + q + k
            let factor = pow5InvSplit[q]
            vr = mulShift(mv, factor, i)
            vp = mulShift(mp, factor, i)
            vm = mulShift(mm, factor, i)
            if q != 0 && (vp &- 1) / 10 <= vm / 10 {
                let l = pow5InvBitCount + pow5bits(q - 1) - 1
                lastRemovedDigit = mulShift(mv, pow5InvSplit[q - 1], -e2 + q - 1 + l) % 10
            }
            if q <= 9 {
                if mv % 5 == 0 {
                    vrIsTrailingZeros = pow5Factor(mv) >= q
                } else if acceptBounds {
                    vmIsTrailingZeros = pow5Factor(mm) >= q
                } else if pow5Factor(mp) >= q {
                    vp -= 1
                }
            }
        } else {
            let q = log10Pow5(-e2)
            e10 = q + e2
            let i = -e2 - q
            let k = pow5bits(i) - pow5BitCount
            var j = q - k
            vr = mulShift(mv, pow5Split[i], j)
            vp = mulShift(mp, pow5Split[i], j)
            vm = mulShift(mm, pow5Split[i], j)
            if q != 0 && (vp &- 1) / 10 <= vm / 10 {
                j = q - 1 - (pow5bits(i + 1) - pow5BitCount)
                lastRemovedDigit = mulShift(mv, pow5Split[i + 1], j) % 10
            }
            if q <= 1 {
                vrIsTrailingZeros = true
                if acceptBounds {
                    vmIsTrailingZeros = mmShift == 1
                } else {
                    vp -= 1
                }
            } else if q < 31 {
                vrIsTrailingZeros = mv & ((1 << UInt32(q - 1)) - 1) == 0
            }
        }

        var removed = 0
        let output: UInt32
        if vmIsTrailingZeros || vrIsTrailingZeros {
            while vp / 10 > vm / 10 {
                vmIsTrailingZeros = vmIsTrailingZeros && vm % 10 == 0
                vrIsTrailingZeros = vrIsTrailingZeros && lastRemovedDigit == 0
                lastRemovedDigit = vr % 10
                vr /= 10
                vp /= 10
                vm /= 10
                removed += 1
            }
            if vmIsTrailingZeros {
                while vm % 10 == 0 {
                    vrIsTrailingZeros = vrIsTrailingZeros && lastRemovedDigit == 0
                    lastRemovedDigit = vr % 10
                    vr /= 10
                    vp /= 10
                    vm /= 10
                    removed += 1
                }
            }
            if vrIsTrailingZeros && lastRemovedDigit == 5 && vr % 2 == 0 {
                lastRemovedDigit = 4  // exactly halfway: round to even
            }
            output = vr + ((vr == vm && (!acceptBounds || !vmIsTrailingZeros)) || lastRemovedDigit >= 5 ? 1 : 0)
        } else {
            while vp / 10 > vm / 10 {
                lastRemovedDigit = vr % 10
                vr /= 10
                vp /= 10
                vm /= 10
                removed += 1
            }
            output = vr + (vr == vm || lastRemovedDigit >= 5 ? 1 : 0)
        }
        return (output, e10 + removed)
    }

    /// Decimal digits of `value` (1–10).
    @inline(__always) static func digitCount(_ value: UInt32) -> Int {
        var count = 1, limit: UInt32 = 10
        while count < 10 && value >= limit {
            count += 1
            limit = limit &* 10
        }
        return count
    }

    /// Longest text `write(_:to:)` produces (`-1.17549435e-38`), for sizing buffers.
    public static let maxFloatLength = 16

    /// Writes the shortest JSON number text that reads back as `value` (JSON has no NaN or infinity: those are
    /// written as `null`). Plain decimals for 1e-5 ≤ |value| < 1e9 (`0.1`, `-3.25`, `16777216`), else scientific
    /// (`1.5e-20`). Returns the bytes written (at most `maxFloatLength`).
    @inline(__always)
    public static func write(_ value: Float, to out: UnsafeMutablePointer<UInt8>) -> Int {
        var p = 0
        guard value.isFinite else {
            for byte in "null".utf8 { out[p] = byte; p += 1 }
            return p
        }
        if value.sign == .minus {
            out[p] = UInt8(ascii: "-")
            p += 1
        }
        if value == 0 {
            out[p] = UInt8(ascii: "0")
            return p + 1
        }
        let (digits, exponent) = shortest(value)
        let length = digitCount(digits)
        let scientific = exponent + length - 1  // value = d.ddd × 10^scientific
        // The digits, most significant first, into out[p..<p+length] at `start`.
        func putDigits(at start: Int) {
            var d = digits
            var i = start + length - 1
            while i >= start {
                out[i] = UInt8(ascii: "0") + UInt8(d % 10)
                d /= 10
                i -= 1
            }
        }
        if scientific >= 0 && scientific < 9 {
            if exponent >= 0 {  // an integer: digits then zeros
                putDigits(at: p)
                p += length
                for _ in 0..<exponent { out[p] = UInt8(ascii: "0"); p += 1 }
            } else {  // digits with a point inside
                let integerDigits = length + exponent
                putDigits(at: p)
                // Shift the fraction one to the right to make room for the point.
                var i = p + length
                while i > p + integerDigits {
                    out[i] = out[i - 1]
                    i -= 1
                }
                out[p + integerDigits] = UInt8(ascii: ".")
                p += length + 1
            }
        } else if scientific < 0 && scientific >= -5 {  // 0.000ddd
            out[p] = UInt8(ascii: "0")
            out[p + 1] = UInt8(ascii: ".")
            p += 2
            for _ in 0..<(-scientific - 1) { out[p] = UInt8(ascii: "0"); p += 1 }
            putDigits(at: p)
            p += length
        } else {  // d.ddde±x
            putDigits(at: p + 1)
            out[p] = out[p + 1]
            if length > 1 {
                out[p + 1] = UInt8(ascii: ".")
                p += length + 1
            } else {
                p += 1
            }
            out[p] = UInt8(ascii: "e")
            p += 1
            var e = scientific
            if e < 0 {
                out[p] = UInt8(ascii: "-")
                p += 1
                e = -e
            }
            if e >= 10 {
                out[p] = UInt8(ascii: "0") + UInt8(e / 10)
                p += 1
            }
            out[p] = UInt8(ascii: "0") + UInt8(e % 10)
            p += 1
        }
        return p
    }

    /// Appends the text of `value` (see `write(_:to:)`) to `out`.
    @inline(__always)
    public static func append(_ value: Float, to out: inout [UInt8]) {
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: maxFloatLength) { buffer in
            let count = write(value, to: buffer.baseAddress!)
            out.append(contentsOf: UnsafeBufferPointer(rebasing: buffer[0..<count]))
        }
    }

    /// The text of `value` as a `String` (see `write(_:to:)`).
    public static func string(_ value: Float) -> String {
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: maxFloatLength) { buffer in
            let count = write(value, to: buffer.baseAddress!)
            return String(decoding: UnsafeBufferPointer(rebasing: buffer[0..<count]), as: UTF8.self)
        }
    }

    // MARK: - Reading

    /// Exact powers of ten a `Double` holds (10^0…10^22).
    static let exactPowers: [Double] = (0...22).map { e in
        var value = 1.0
        for _ in 0..<e { value *= 10 }
        return value
    }

    /// The `Double` nearest to the JSON number in `bytes` (already checked against the JSON grammar by the caller),
    /// given its significant digits: `mantissa` (the first 19 significant digits), whether more digits followed
    /// (`truncated`), and the decimal exponent that applies to `mantissa`.
    ///
    /// Clinger's fast path — the mantissa exact in a double (≤ 2^53) and |exponent| ≤ 22 — gives the correctly
    /// rounded double with one multiplication or division; anything else is read by `strtod`.
    @inline(__always)
    static func double(bytes: UnsafeBufferPointer<UInt8>, mantissa: UInt64, exponent: Int, truncated: Bool, negative: Bool) -> Double? {
        if !truncated {
            if mantissa == 0 { return negative ? -0.0 : 0.0 }
            if mantissa <= 1 << 53 && exponent >= -22 && exponent <= 22 {
                var value = Double(mantissa)
                value = exponent < 0 ? value / exactPowers[-exponent] : value * exactPowers[exponent]
                return negative ? -value : value
            }
        }
        return strtodBytes(bytes)
    }

    /// `strtod` of bytes that are not NUL-terminated (copied into a small buffer, no `String`).
    static func strtodBytes(_ bytes: UnsafeBufferPointer<UInt8>) -> Double? {
        withUnsafeTemporaryAllocation(of: CChar.self, capacity: bytes.count + 1) { buffer in
            for i in 0..<bytes.count { buffer[i] = CChar(bitPattern: bytes[i]) }
            buffer[bytes.count] = 0
            var end: UnsafeMutablePointer<CChar>?
            let value = strtod(buffer.baseAddress!, &end)
            guard let end, end - buffer.baseAddress! == bytes.count else { return nil }
            return value
        }
    }

    /// Reads a JSON number (the whole of `bytes`) as a `Double`; nil when it is not one.
    public static func parseDouble(_ bytes: UnsafeBufferPointer<UInt8>) -> Double? {
        var cursor = JSONParser.Cursor(bytes: bytes)
        guard let value = try? cursor.number(), cursor.index == bytes.count else { return nil }
        return value
    }
}
