/// The version of this program, one constant for every part of it: `jobfarm --version` prints it, and what reports
/// itself to others (a worker's registry entry) uses the same.
public enum JobFarmVersion {
    /// Semantic version: the major part changes when the Redis data model or a script's contract does.
    public static let current = "0.1.0"
}
