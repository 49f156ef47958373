import Compute
import Foundation
import Logging

/// The OpenBLAS kernel chooser of `jobfarm worker` and `jobfarm bench blas` (docs/JOBS.md, "OpenBLAS kernels").
///
/// OpenBLAS reads `OPENBLAS_CORETYPE` once, when the library loads, so a process cannot switch kernels itself:
/// each candidate is measured in a child (`jobfarm blas-probe`), and when one other than the library's own choice
/// wins, the process re-executes itself (`execv` of /proc/self/exe, same arguments) with `OPENBLAS_CORETYPE` set and
/// `JOBFARM_BLAS_CHOSEN` carrying the summary, so the new image logs it and does not measure again. The figures are
/// cached per machine (`BLASKernelChooser.cacheKey`); what wins is decided by `BLASKernelChooser.decide`.
enum BLASKernelSelection {
    /// A probe takes about 0.4 s; this much means the machine is swamped or the child hangs.
    static let probeTimeout: Double = 30

    /// Runs the chooser. Call it first thing, before connections or the worker's threads exist: when another kernel
    /// family wins it does not return (the process image is replaced). Returns what goes to the log as
    /// `blas_choice`.
    static func run(logger: Logger) -> String {
        let environment = ProcessInfo.processInfo.environment
        let cpuinfo = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        let flags = BLASKernelChooser.cpuFlags(cpuinfo: cpuinfo)
        let libraryCore = BLASInfo.coreName
        switch BLASKernelChooser.plan(environment: environment, flags: flags, libraryCore: libraryCore) {
        case .keep(let reason):
            return withThreadTimeout(reason, environment: environment, logger: logger)
        case .chosen(let summary):
            let forced = environment[BLASKernelChooser.coreTypeVariable] ?? ""
            if libraryCore.caseInsensitiveCompare(forced) != .orderedSame {
                return summary + "; but OpenBLAS runs \(libraryCore), not \(forced)"
            }
            return summary
        case .measure(let extra):
            return measure(extra: extra, libraryCore: libraryCore, cpu: BLASKernelChooser.cpuIdentity(cpuinfo: cpuinfo),
                           flags: flags, environment: environment, logger: logger)
        }
    }

    private static func measure(extra: [String], libraryCore: String, cpu: String, flags: Set<String>,
                                environment: [String: String], logger: Logger) -> String {
        let key = BLASKernelChooser.cacheKey(cpu: cpu, flags: flags, openBLASConfig: BLASInfo.config, candidates: [libraryCore] + extra)
        var path: String?
        var lock: Int32 = -1
        if let directory = BLASKernelChooser.cacheDirectory(environment: environment) {
            do {
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
                path = directory + "/" + BLASKernelChooser.cacheFileName
                // Workers started together (scripts/up starts every pool at once) measure one at a time: the first
                // measures on quiet cores, the others wait and read its figures. Closed on exec (O_CLOEXEC).
                lock = open(directory + "/blas-kernels.lock", O_CREAT | O_RDWR | O_CLOEXEC, 0o644)
                if lock >= 0 { while flock(lock, LOCK_EX) != 0 && errno == EINTR {} }
            } catch {
                logger.warning("no cache for the OpenBLAS kernel choice; measuring every start", metadata: [
                    "directory": "\(directory)", "error": "\(error)"])
            }
        }
        defer { if lock >= 0 { close(lock) } }

        var cache = path.map { BLASKernelCache.load(path: $0) } ?? BLASKernelCache()
        let results: [BLASCandidateResult]
        let cached: Bool
        if let entry = cache.entries[key] {
            results = entry.results
            cached = true
        } else {
            logger.info("measuring OpenBLAS kernels (once per machine, then cached)", metadata: [
                "candidates": "\(([libraryCore + " (library's own)"] + extra).joined(separator: ", "))",
                "cache": "\(path ?? "none (set JOBFARM_CACHE_DIR or HOME)")"])
            results = ([nil] + extra).map { probe(coreType: $0, libraryCore: libraryCore) }
            cached = false
        }
        let decision = BLASKernelChooser.decide(results)
        if !cached, let path {
            if decision.cacheable {
                cache.entries[key] = BLASKernelCache.Entry(
                    measuredAt: ISO8601DateFormatter().string(from: Date()), results: results, chosen: decision.core,
                    summary: decision.summary)
                do {
                    try cache.store(path: path)
                } catch {
                    logger.warning("could not write the OpenBLAS kernel cache", metadata: ["path": "\(path)", "error": "\(error)"])
                }
            } else {
                logger.warning("OpenBLAS kernel measurement not cached: the library's own kernels gave no figure",
                               metadata: ["blas_choice": "\"\(decision.summary)\""])
            }
        }
        let summary = decision.summary + (cached ? "; cached" : "")
        guard let coreType = decision.coreType else {
            if lock >= 0 {
                close(lock)
                lock = -1
            }
            return withThreadTimeout(summary, environment: environment, logger: logger)
        }
        if lock >= 0 {
            close(lock)
            lock = -1
        }
        logger.info("re-executing with the faster OpenBLAS kernels", metadata: [
            "openblas_coretype": "\(coreType)", "blas_choice": "\"\(summary)\""])
        let error = reexecute(coreType: coreType, summary: summary)
        logger.warning("re-exec failed; running the library's own kernels", metadata: [
            "error": "\(String(cString: strerror(error)))"])
        return summary + "; re-exec failed (\(String(cString: strerror(error)))), running \(libraryCore)"
    }

    /// Runs `jobfarm blas-probe` with `OPENBLAS_CORETYPE=coreType` (unset for nil) and reads its figures. A child
    /// that crashes (an illegal instruction: kernels for another CPU), hangs or prints no figures loses.
    static func probe(coreType: String?, libraryCore: String) -> BLASCandidateResult {
        var environment = ProcessInfo.processInfo.environment
        environment[BLASKernelChooser.coreTypeVariable] = coreType
        environment[BLASKernelChooser.chosenVariable] = nil
        environment["OPENBLAS_NUM_THREADS"] = "1"  // no thread pool at load; the probe measures one thread anyway
        environment["SWIFT_BACKTRACE"] = "enable=no"  // a SIGILL should end the child at once, not symbolicate
        let run = ChildRun.run(path: "/proc/self/exe", arguments: [CommandLine.arguments.first ?? "jobfarm", "blas-probe"],
                               environment: environment, timeout: probeTimeout)
        return BLASCandidateResult.from(coreType: coreType, libraryCore: libraryCore, output: run.output, failure: run.failure)
    }

    /// After a threaded call OpenBLAS's helper threads spin for 2^28 cycles (about 0.1 s) before they sleep; in a
    /// worker that is a core taken from the split kernels' own threads, Redis and the coordination for every pass
    /// that used OpenBLAS's threads (a 2-thread 16-row FP32 pass of the bench model: 7.6 ms beside the spinning,
    /// 4.7 ms without). 2^20 cycles (under half a millisecond) keeps a pass's consecutive layers from waking them
    /// and lets them sleep between passes. A value in the environment is kept.
    static let threadTimeout = (variable: "OPENBLAS_THREAD_TIMEOUT", log2Cycles: "20")

    /// `summary` when OpenBLAS already runs with a thread timeout from the environment; otherwise the process is
    /// re-executed with `OPENBLAS_THREAD_TIMEOUT` set (OpenBLAS reads it once, at load) and this returns only if
    /// that fails.
    static func withThreadTimeout(_ summary: String, environment: [String: String], logger: Logger) -> String {
        guard environment[threadTimeout.variable] == nil else { return summary }
        let error = reexecute(coreType: nil, summary: nil)
        logger.warning("re-exec failed; OpenBLAS's threads spin 0.1 s after each threaded call", metadata: [
            "error": "\(String(cString: strerror(error)))"])
        return summary
    }

    /// `execv` of /proc/self/exe with the same arguments and, added to the environment, `OPENBLAS_CORETYPE` +
    /// `JOBFARM_BLAS_CHOSEN` when a kernel family was chosen and `OPENBLAS_THREAD_TIMEOUT` when not set. Returns
    /// only on failure, with errno (the environment is restored).
    static func reexecute(coreType: String?, summary: String?) -> Int32 {
        if let coreType { setenv(BLASKernelChooser.coreTypeVariable, coreType, 1) }
        if let summary { setenv(BLASKernelChooser.chosenVariable, summary, 1) }
        let setTimeout = getenv(threadTimeout.variable) == nil
        if setTimeout { setenv(threadTimeout.variable, threadTimeout.log2Cycles, 1) }
        fflush(nil)  // every stdio stream: buffered output would be lost with the old image
        var argv: [UnsafeMutablePointer<CChar>?] = CommandLine.arguments.map { strdup($0) } + [nil]
        execv("/proc/self/exe", &argv)
        let error = errno
        for p in argv { free(p) }
        if coreType != nil { unsetenv(BLASKernelChooser.coreTypeVariable) }
        if summary != nil { unsetenv(BLASKernelChooser.chosenVariable) }
        if setTimeout { unsetenv(threadTimeout.variable) }
        return error
    }
}

/// A child process with its standard output and error captured (posix_spawn, no Foundation `Process`: nothing of
/// this runs before the chooser's exec but the child itself).
struct ChildRun {
    /// Standard output and error, when it exited with status 0.
    var output: String?
    /// Why not: "exited with status 1: …", "killed by signal 4 (Illegal instruction)", "timed out after 30 s".
    var failure: String?

    static func run(path: String, arguments: [String], environment: [String: String], timeout: Double) -> ChildRun {
        var fds: [Int32] = [-1, -1]
        guard pipe(&fds) == 0 else { return ChildRun(failure: "pipe: \(String(cString: strerror(errno)))") }
        let (readEnd, writeEnd) = (fds[0], fds[1])
        // Neither end leaks into other children or a re-exec; the child's dup2 copies on 1 and 2 stay open.
        _ = fcntl(readEnd, F_SETFD, FD_CLOEXEC)
        _ = fcntl(writeEnd, F_SETFD, FD_CLOEXEC)
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, writeEnd, 1)
        posix_spawn_file_actions_adddup2(&actions, writeEnd, 2)
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        var envp: [UnsafeMutablePointer<CChar>?] = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            for p in argv { free(p) }
            for p in envp { free(p) }
        }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, path, &actions, nil, &argv, &envp)
        close(writeEnd)
        guard spawned == 0 else {
            close(readEnd)
            return ChildRun(failure: "could not start \(path): \(String(cString: strerror(spawned)))")
        }
        var output: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        let deadline = BenchTiming.now() + timeout
        var timedOut = false
        while true {
            let remaining = deadline - BenchTiming.now()
            if remaining <= 0 {
                kill(pid, SIGKILL)
                timedOut = true
                break
            }
            var pfd = pollfd(fd: readEnd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&pfd, 1, Int32(min(remaining, 1) * 1000) + 1)
            if ready < 0 && errno == EINTR { continue }
            if ready <= 0 { continue }
            let n = read(readEnd, &buffer, buffer.count)
            if n > 0 {
                output.append(contentsOf: buffer[0..<n])
                if output.count > 1 << 20 { output.removeFirst(output.count - (1 << 20)) }
            } else if n == 0 || errno != EINTR {
                break
            }
        }
        close(readEnd)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let text = String(decoding: output, as: UTF8.self)
        if timedOut { return ChildRun(failure: String(format: "timed out after %.0f s", timeout)) }
        let signal = status & 0x7f
        if signal != 0 {
            return ChildRun(failure: "killed by signal \(signal) (\(String(cString: strsignal(signal))))")
        }
        let code = (status >> 8) & 0xff
        if code != 0 {
            let last = text.split(separator: "\n").last.map { ": " + $0.prefix(200) } ?? ""
            return ChildRun(failure: "exited with status \(code)\(last)")
        }
        return ChildRun(output: text)
    }
}
