import ArgumentParser
import Compute
import Foundation

/// `jobfarm blas-probe` (hidden): one JSON line with the GFLOP/s of the OpenBLAS kernels this process loaded, on
/// one OpenBLAS thread. The kernel chooser (`BLASKernelSelection`) runs it once per candidate with
/// `OPENBLAS_CORETYPE` set, since OpenBLAS reads that variable only when the library loads.
///
/// Shapes: `cblas_sgemm` for `y[b,1024] = x[b,1024]·W[1024,1024]ᵀ` at b = 64 and 512 (the inference layout, as in
/// `jobfarm bench blas`), `cblas_sgemv` at b = 1. Best of `rounds` interleaved rounds; about 0.4 s in all.
struct BLASProbeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "blas-probe", abstract: "Measure the OpenBLAS kernels this process loaded (one JSON line).",
        shouldDisplay: false)

    @Option(parsing: .unconditional, help: "Interleaved rounds (best of).") var rounds: Int = 5
    @Option(parsing: .unconditional, help: "Seconds each shape runs per round.") var minTime: Double = 0.02

    func validate() throws {
        try OptionCheck.integer(rounds, "--rounds", atLeast: 1)
        try OptionCheck.seconds(minTime, "--min-time", positive: true)
    }

    func run() throws {
        // A candidate that is not for this CPU dies of SIGILL: leave no core file behind in the worker's directory.
        var noCore = rlimit(rlim_cur: 0, rlim_max: 0)
        _ = setrlimit(__rlimit_resource_t(RLIMIT_CORE.rawValue), &noCore)
        let report = try BLASProbe.measure(rounds: max(1, rounds), minTime: max(0.001, minTime))
        print(report.jsonLine)
    }
}

enum BLASProbe {
    static func measure(rounds: Int, minTime: Double) throws -> BLASProbeReport {
        let start = BenchTiming.now()
        BLASThreads.set(1)
        let n = 1024, k = 1024
        var rng = SeededRandom(seed: 7)
        let weight = (0..<(n * k)).map { _ in rng.nextUnitFloat() - 0.5 }
        let x = (0..<(512 * k)).map { _ in rng.nextUnitFloat() - 0.5 }
        var y = [Float](repeating: 0, count: 512 * n)
        func sgemm(_ batch: Int) {
            x.withUnsafeBufferPointer { xp in
                weight.withUnsafeBufferPointer { wp in
                    y.withUnsafeMutableBufferPointer { yp in
                        RawBLAS.sgemm(m: batch, n: n, k: k, a: xp.baseAddress!, b: wp.baseAddress!, transposeB: true, c: yp.baseAddress!)
                    }
                }
            }
        }
        func sgemv() {
            x.withUnsafeBufferPointer { xp in
                weight.withUnsafeBufferPointer { wp in
                    y.withUnsafeMutableBufferPointer { yp in
                        RawBLAS.sgemv(rows: n, cols: k, a: wp.baseAddress!, x: xp.baseAddress!, y: yp.baseAddress!)
                    }
                }
            }
        }
        let t = try BenchTiming.interleaved(rounds: rounds, minTime: minTime, [{ sgemm(64) }, { sgemm(512) }, { sgemv() }])
        func gflops(_ batch: Int, _ seconds: Double) -> Double { (2.0 * Double(batch * n * k) / seconds / 1e7).rounded() / 100 }
        return BLASProbeReport(
            core: BLASInfo.coreName, config: BLASInfo.config, threads: BLASThreads.current,
            sgemmB64: gflops(64, t[0]), sgemmB512: gflops(512, t[1]), sgemvB1: gflops(1, t[2]),
            seconds: BenchTiming.now() - start)
    }
}
