#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Synchronization

/// Bookkeeping of the local farm-dataset cache (`<spool>/jobfarm-datasets/`), shared by every `MLEnvironment` of the
/// process: which spooled files jobs of this process have open, which directories were already swept of stale
/// partials, and the LRU trim that keeps the directory's complete files within `MLJobOptions.spoolCacheBytes`.
///
/// Recency is the file's modification time: it is set when the file is renamed into place and set again
/// (`futimens`) whenever a job reuses the cached copy, so it is tracked on `noatime`/`relatime` mounts too, and by
/// every worker process sharing the directory.
///
/// Files are identified by device and inode, not by path, so two spellings of one directory (a symlink, a trailing
/// slash) cannot hide a file in use.
final class SpoolCache: Sendable {
    /// The one instance of the process.
    static let shared = SpoolCache()

    /// `.partial` files older than this belong to a worker that died (a live one writes to its partial at every
    /// chunk, so its modification time stays fresh) and are deleted.
    static let stalePartialAge: TimeInterval = 3600

    struct FileID: Hashable, Sendable {
        var device: UInt64
        var inode: UInt64
    }

    private struct State {
        /// Spooled files open in jobs of this process, with how many leases hold each.
        var inUse: [FileID: Int] = [:]
        /// Directories (standardized paths) already swept of stale partials by this process.
        var swept: Set<String> = []
    }

    private let state = Mutex(State())

    /// A name `<64 hex digits>.<npy|csv>`: a complete, content-addressed copy (everything else in the directory is
    /// a partial or not ours, and is neither counted nor evicted).
    static func isCompleteCopy(_ name: String) -> Bool {
        let parts = name.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 2, parts[1] == "npy" || parts[1] == "csv", parts[0].utf8.count == 64 else { return false }
        return parts[0].utf8.allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) || (0x41...0x46).contains($0) }
    }

    /// Deletes `.partial` files older than `stalePartialAge` in `directory`, once per directory per process (the
    /// trim sweeps again after every spool).
    func sweepOnFirstUse(_ directory: URL) {
        let key = directory.standardizedFileURL.path
        let first = state.withLock { $0.swept.insert(key).inserted }
        if first { removeStalePartials(directory, now: Date()) }
    }

    /// Opens `url` for reading and registers it as in use, atomically with respect to `trim` in this process (so
    /// a trim cannot delete the file between the open and the registration). Nil when the file cannot be opened
    /// (it does not exist, or another process evicted it). `cachedAs`: the name the file will have in the cache when
    /// `url` is a partial about to be renamed.
    func lease(_ url: URL, cachedAs: URL? = nil) -> SpoolLease? {
        state.withLock { state -> SpoolLease? in
            let fd = open(url.path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { return nil }
            var info = stat()
            guard fstat(fd, &info) == 0 else { close(fd); return nil }
            let id = FileID(device: UInt64(info.st_dev), inode: UInt64(info.st_ino))
            state.inUse[id, default: 0] += 1
            return SpoolLease(url: cachedAs ?? url, descriptor: fd, id: id, bytes: Int(info.st_size), cache: self)
        }
    }

    fileprivate func release(_ id: FileID) {
        state.withLock { state in
            if let n = state.inUse[id], n > 1 { state.inUse[id] = n - 1 } else { state.inUse[id] = nil }
        }
    }

    /// Whether a lease of this process holds the file (for tests).
    func isInUse(_ url: URL) -> Bool {
        var info = stat()
        guard stat(url.path, &info) == 0 else { return false }
        let id = FileID(device: UInt64(info.st_dev), inode: UInt64(info.st_ino))
        return state.withLock { $0.inUse[id] != nil }
    }

    /// Brings the complete copies in `directory` within `limit` bytes: while their sizes add up to more, deletes
    /// the least recently used one (oldest modification time) that is neither `keep` (the file just written) nor
    /// open in a job of this process. Stale partials are deleted on the way. When only protected files remain, the
    /// directory stays over the limit until a later trim.
    ///
    /// Files open in jobs of *other* worker processes sharing the directory may be deleted: those jobs hold the
    /// file open for as long as they use it (`SpoolLease`) and read it through that descriptor, and on Linux an
    /// unlinked file stays readable by whoever has it open (its blocks are freed at the last close). A process that
    /// finds a copy gone opens nothing and spools it again.
    ///
    /// - Returns: the names deleted (partials included).
    @discardableResult
    func trim(_ directory: URL, limit: Int, keep: FileID?, now: Date = Date()) -> [String] {
        var removed = removeStalePartials(directory, now: now)
        // The lock is held while deleting, so that `lease` cannot open a file between the in-use check and the
        // unlink: a job of this process never loses a copy it has just found.
        state.withLock { state in
            guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory.path) else { return }
            var files: [(name: String, id: FileID, bytes: Int, modified: timespec)] = []
            for name in names where Self.isCompleteCopy(name) {
                var info = stat()
                guard lstat(directory.appendingPathComponent(name).path, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else { continue }
                files.append((name, FileID(device: UInt64(info.st_dev), inode: UInt64(info.st_ino)), Int(info.st_size), modificationTime(info)))
            }
            var total = files.reduce(0) { $0 + $1.bytes }
            guard total > limit else { return }
            files.sort { a, b in
                a.modified.tv_sec != b.modified.tv_sec ? a.modified.tv_sec < b.modified.tv_sec : a.modified.tv_nsec < b.modified.tv_nsec
            }
            for file in files {
                guard total > limit else { break }
                guard file.id != keep, state.inUse[file.id] == nil else { continue }
                let path = directory.appendingPathComponent(file.name).path
                if unlink(path) == 0 {
                    removed.append(file.name)
                    total -= file.bytes
                } else if errno == ENOENT {
                    total -= file.bytes  // another process evicted it first
                }
            }
        }
        return removed
    }

    /// Deletes `.partial` files whose modification time is more than `stalePartialAge` before `now`; younger ones
    /// may be being written by another process and are left alone.
    @discardableResult
    private func removeStalePartials(_ directory: URL, now: Date) -> [String] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory.path) else { return [] }
        var removed: [String] = []
        for name in names where name.hasSuffix(".partial") {
            let path = directory.appendingPathComponent(name).path
            var info = stat()
            guard lstat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else { continue }
            let mtime = modificationTime(info)
            let modified = Double(mtime.tv_sec) + Double(mtime.tv_nsec) / 1e9
            if now.timeIntervalSince1970 - modified > Self.stalePartialAge, unlink(path) == 0 { removed.append(name) }
        }
        return removed
    }
}

private func modificationTime(_ info: stat) -> timespec {
    #if canImport(Darwin)
    info.st_mtimespec
    #else
    info.st_mtim
    #endif
}

/// A spooled dataset held open by a job: while it lives, trims of this process never delete the file, and the job
/// reads through the open descriptor (`readableURL`), so an eviction by another worker process sharing the
/// directory cannot pull the file away between two passes. Released when the last copy of the `BlockedDataset`
/// holding it goes away.
final class SpoolLease: Sendable {
    /// The file's name in the cache.
    let url: URL
    /// Its size when it was opened.
    let bytes: Int
    let id: SpoolCache.FileID
    private let descriptor: Int32
    private let cache: SpoolCache

    fileprivate init(url: URL, descriptor: Int32, id: SpoolCache.FileID, bytes: Int, cache: SpoolCache) {
        self.url = url
        self.descriptor = descriptor
        self.id = id
        self.bytes = bytes
        self.cache = cache
    }

    deinit {
        close(descriptor)
        cache.release(id)
    }

    /// A path that opens this very file even after it was unlinked: on Linux `/proc/self/fd/N` (opening it gives a
    /// new, independent file offset), elsewhere the cache path.
    var readableURL: URL {
        #if os(Linux)
        let proc = "/proc/self/fd/\(descriptor)"
        if access(proc, R_OK) == 0 { return URL(fileURLWithPath: proc) }
        #endif
        return url
    }

    /// Marks the copy as just used: sets its modification (and access) time to now, the recency the trim sorts by.
    /// Fails silently where the process may not (a shared directory with another user's files).
    func touch() {
        _ = futimens(descriptor, nil)
    }
}
