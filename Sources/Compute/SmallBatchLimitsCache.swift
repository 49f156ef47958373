import Foundation

/// The measured small-batch kernel limits (`SmallBatchKernel.calibrate()`), cached per machine in
/// `small-batch-limits.json` beside the OpenBLAS kernel choice (`BLASKernelChooser.cacheDirectory`).
///
/// Why: the calibration costs a worker ~0.9 s of CPU and a 53 MB peak of memory at every start, and its figures
/// depend only on the machine, the OpenBLAS build and kernels running, the kernels' own code and the thread count;
/// workers that an autoscaler starts and stops often measure once.
public struct SmallBatchLimitsCache: Codable, Equatable, Sendable {
    /// Bump when the kernels (`Sources/CComputeKernels/gemm_small.c`) or what `calibrate()` times change: figures of
    /// another version are measured again.
    ///
    /// 3: FP16 and int8 layers' own limits (`Entry.precisions`). 4: the AVX-512 kernels, one-thread FP32 limits up
    /// to 128 rows; the key names the instruction set in use.
    public static let kernelVersion = 4
    public static let fileName = "small-batch-limits.json"
    /// Beside the cache file: workers started together measure one at a time.
    public static let lockFileName = "small-batch-limits.lock"

    /// One measurement.
    public struct Entry: Codable, Equatable, Sendable {
        /// ISO 8601.
        public var measuredAt: String
        /// The one-thread batch limit per size class (`SmallBatchKernel.SizeClass`, in order).
        public var limits: [Int]
        /// What the calibration printed, for people.
        public var detail: String
        /// The split limits per thread count (the key's `split=`), one per size class
        /// (`SmallBatchKernel.calibrateSplit`); nil or empty when no split thread count was asked for.
        public var splitLimits: [String: [Int]]?
        /// FP16 and int8 layers' own limits (`SmallBatchKernel.calibrate(precision:threads:)`), by precision
        /// (`fp16`, `int8`); nil in entries written before they were measured.
        public var precisions: [String: PrecisionLimits]?

        public init(measuredAt: String, limits: [Int], detail: String, splitLimits: [String: [Int]]? = nil,
                    precisions: [String: PrecisionLimits]? = nil) {
            self.measuredAt = measuredAt
            self.limits = limits
            self.detail = detail
            self.splitLimits = splitLimits
            self.precisions = precisions
        }

        /// A limit per size class, each one `SmallBatchKernel.setLimit` accepts, and split limits (if any) of
        /// thread counts above 1, a limit per size class in 0…`SmallBatchKernel.maxSplitBatch`, and FP16/int8 limits (if any) of those two precisions only, each in 0…`SmallBatchKernel.maxSplitBatch`.
        public var isValid: Bool {
            let classes = SmallBatchKernel.SizeClass.allCases.count
            return limits.count == classes && limits.allSatisfy { (2...SmallBatchKernel.maxSplitBatch).contains($0) }
                && Self.validSplit(splitLimits)
                && (precisions ?? [:]).allSatisfy { name, entry in
                    Precision(rawValue: name).map { $0 != .fp32 } == true
                        && entry.limits.count == classes && entry.limits.allSatisfy { (0...SmallBatchKernel.maxSplitBatch).contains($0) }
                        && Self.validSplit(entry.splitLimits)
                }
        }

        static func validSplit(_ table: [String: [Int]]?) -> Bool {
            let classes = SmallBatchKernel.SizeClass.allCases.count
            return (table ?? [:]).allSatisfy { threads, values in
                (Int(threads) ?? 0) > 1 && values.count == classes && values.allSatisfy { (0...SmallBatchKernel.maxSplitBatch).contains($0) }
            }
        }

        /// Whether it holds split limits for every thread count in `threads`.
        public func hasSplitLimits(for threads: [Int]) -> Bool {
            threads.filter { $0 > 1 }.allSatisfy { splitLimits?[String($0)] != nil }
        }

        /// Sets the limits it holds (`SmallBatchKernel.setLimits`, `setSplitLimits`), FP16's and int8's under
        /// their own precision.
        public func apply() {
            SmallBatchKernel.setLimits(limits)
            for (threads, values) in splitLimits ?? [:] {
                if let count = Int(threads) { SmallBatchKernel.setSplitLimits(values, threads: count) }
            }
            for (name, entry) in precisions ?? [:] {
                guard let precision = Precision(rawValue: name), precision != .fp32 else { continue }
                SmallBatchKernel.setLimits(entry.limits, precision: precision)
                for (threads, values) in entry.splitLimits ?? [:] {
                    if let count = Int(threads) { SmallBatchKernel.setSplitLimits(values, threads: count, precision: precision) }
                }
            }
        }
    }

    /// The measured limits of one weight precision other than FP32.
    public struct PrecisionLimits: Codable, Equatable, Sendable {
        /// The one-thread limit per size class (0…`SmallBatchKernel.maxSplitBatch`).
        public var limits: [Int]
        /// The split limits per thread count, one per size class.
        public var splitLimits: [String: [Int]]?

        public init(limits: [Int], splitLimits: [String: [Int]]? = nil) {
            self.limits = limits
            self.splitLimits = splitLimits
        }
    }

    public var version = 1
    public var entries: [String: Entry] = [:]

    public init(entries: [String: Entry] = [:]) { self.entries = entries }

    /// The cache key: what the limits depend on. Another CPU or flag set, OpenBLAS build, kernel family running
    /// (`OPENBLAS_CORETYPE` after the kernel choice), kernel version or instruction set, OpenBLAS thread count or
    /// split thread counts (the threads of the dynamic batcher's passes) measures again.
    public static func key(cpu: String, flags: Set<String>, openBLASConfig: String, core: String, threads: Int,
                           splitThreads: [Int] = [], kernelVersion: Int = kernelVersion,
                           instructionSet: SmallBatchKernel.InstructionSet = SmallBatchKernel.instructionSet) -> String {
        let relevant = BLASKernelChooser.relevantFlags.filter(flags.contains).joined(separator: ",")
        let split = Set(splitThreads.filter { $0 > 1 }).sorted().map(String.init).joined(separator: ",")
        return "cpu=\(cpu); flags=\(relevant); openblas=\(openBLASConfig); core=\(core); threads=\(threads); "
            + (split.isEmpty ? "" : "split=\(split); ") + "kernels=\(kernelVersion)-\(instructionSet)"
    }

    /// The key of this process: /proc/cpuinfo, the OpenBLAS build and kernels loaded, the thread count in force,
    /// the split thread counts to measure.
    public static func currentKey(splitThreads: [Int] = []) -> String {
        let cpuinfo = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        return key(cpu: BLASKernelChooser.cpuIdentity(cpuinfo: cpuinfo), flags: BLASKernelChooser.cpuFlags(cpuinfo: cpuinfo),
                   openBLASConfig: BLASInfo.config, core: BLASInfo.coreName, threads: BLASThreads.current, splitThreads: splitThreads)
    }

    /// The valid entry for `key`, if any.
    public func entry(for key: String) -> Entry? {
        guard let entry = entries[key], entry.isValid else { return nil }
        return entry
    }

    /// The file's contents; an empty cache when it is missing, unreadable or of another version (a corrupt file is
    /// measured over).
    public static func load(path: String) -> SmallBatchLimitsCache {
        guard let data = FileManager.default.contents(atPath: path),
              let cache = try? JSONDecoder().decode(SmallBatchLimitsCache.self, from: data), cache.version == 1 else {
            return SmallBatchLimitsCache()
        }
        return cache
    }

    /// Writes the file atomically (a temporary file renamed over the old one: a reader never sees half a file).
    public func store(path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        try CacheFile.writeAtomically(try encoder.encode(self), to: path)
    }
}

extension SmallBatchKernel {
    /// The one-thread limits in force, per size class.
    public static var limits: [Int] { SizeClass.allCases.map { limit($0) } }

    /// Sets the one-thread limit of every size class (`limits` in `SizeClass` order).
    public static func setLimits(_ limits: [Int]) {
        for (sizeClass, value) in zip(SizeClass.allCases, limits) { setLimit(value, for: sizeClass) }
    }
}

/// Files of the measurement caches.
enum CacheFile {
    /// Writes `data` to a temporary file in the same directory and renames it over `path`.
    static func writeAtomically(_ data: Data, to path: String) throws {
        let temporary = path + ".tmp-\(getpid())"
        guard FileManager.default.createFile(atPath: temporary, contents: data) else {
            throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: temporary])
        }
        guard rename(temporary, path) == 0 else {
            let error = errno
            unlink(temporary)
            throw POSIXError(POSIXErrorCode(rawValue: error) ?? .EIO)
        }
    }
}
