import Foundation
import Testing
@testable import Compute

@Suite struct FP16ConversionTests {
    @Test func allHalfBitPatternsMatchSwiftFloat16() {
        // Every one of the 65,536 half values converts exactly like Swift's own conversion.
        let halves = (0...UInt16.max).map { Float16(bitPattern: $0) }
        let fast = FP16Conversion.toFloat32(halves)
        let scalar = FP16Conversion.toFloat32Scalar(halves)
        var mismatches = 0
        for i in 0..<halves.count {
            let reference = Float(halves[i])
            if reference.isNaN {
                if !(fast[i].isNaN && scalar[i].isNaN) { mismatches += 1 }
            } else if fast[i].bitPattern != reference.bitPattern || scalar[i].bitPattern != reference.bitPattern {
                mismatches += 1
            }
        }
        #expect(mismatches == 0)
    }

    @Test func floatToHalfRoundsToNearestEvenLikeSwift() {
        var rng = SeededRandom(seed: 7)
        var values: [Float] = [0, -0, 1, -1, 65504, 65519.99, 65520, -65520, 1e-8, 2.98023224e-8, 5.96046448e-8,
                               6.1035156e-5, 6.1e-5, .infinity, -.infinity, 1.0009765625, 1.00048828125, 3.14159265]
        for _ in 0..<20_000 {
            // Random bit patterns over the whole float range, plus a dense sample of the half range.
            values.append(Float(bitPattern: UInt32(truncatingIfNeeded: rng.next())))
            values.append((rng.nextUnitFloat() - 0.5) * 140_000)
        }
        values = values.filter { !$0.isNaN }
        let fast = FP16Conversion.toFloat16(values)
        let scalar = FP16Conversion.toFloat16Scalar(values)
        var mismatches = 0
        for i in 0..<values.count {
            let reference = Float16(values[i]).bitPattern
            if fast[i].bitPattern != reference || scalar[i].bitPattern != reference { mismatches += 1 }
        }
        #expect(mismatches == 0)
        #expect(FP16Conversion.toFloat16([Float.nan])[0].isNaN)
    }

    @Test func blockedConversionHandlesOddLengths() {
        for n in [0, 1, 7, 8, 9, 31, 33, 1000, (1 << 21) + 5] {  // the last one takes the streaming-store path
            let src = (0..<n).map { Float($0 % 1000) * 0.25 - 100 }
            let back = FP16Conversion.toFloat32(FP16Conversion.toFloat16(src))
            #expect(back == src, "length \(n)")
        }
    }

    @Test func reportsHardwareSupportMatchingCPUInfo() throws {
        let cpuinfo = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        if cpuinfo.contains(" f16c") {
            #expect(FP16Conversion.hardwareAccelerated)
        }
    }
}
