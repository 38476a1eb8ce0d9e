//! User-agent parsing into browser family and operating system: just enough
//! to tell "same browser on the same OS" from "something else", in a few
//! substring checks and no allocation.

/// Browser family of a user agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Empty user agent.
    Unknown,
    /// Microsoft Edge (Chromium).
    Edge,
    /// Opera.
    Opera,
    /// Samsung Internet.
    Samsung,
    /// Mozilla Firefox.
    Firefox,
    /// Google Chrome or Chromium.
    Chrome,
    /// Apple Safari.
    Safari,
    /// A script or HTTP library (curl, python-requests, Go, Java, bots).
    Automation,
    /// Anything else.
    Other,
}

/// Operating system of a user agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Os {
    /// Empty user agent.
    Unknown,
    /// Microsoft Windows.
    Windows,
    /// Apple iOS or iPadOS.
    Ios,
    /// Google Android.
    Android,
    /// Apple macOS.
    MacOs,
    /// ChromeOS.
    ChromeOs,
    /// Other Linux.
    Linux,
    /// Anything else.
    Other,
}

/// The browser family of `ua`.
pub fn family(ua: &str) -> Family {
    if ua.is_empty() {
        return Family::Unknown;
    }
    let has = |s: &str| ua.contains(s);
    if has("Edg/") || has("Edge/") || has("EdgA/") || has("EdgiOS/") {
        Family::Edge
    } else if has("OPR/") || has("Opera") {
        Family::Opera
    } else if has("SamsungBrowser") {
        Family::Samsung
    } else if has("Firefox/") || has("FxiOS/") {
        Family::Firefox
    } else if has("Chrome/") || has("CriOS/") || has("Chromium/") {
        Family::Chrome
    } else if has("Safari/") {
        Family::Safari
    } else if has("curl/")
        || has("python")
        || has("Python")
        || has("Go-http-client")
        || has("Java/")
        || has("okhttp")
        || has("HeadlessChrome")
        || has("bot")
    {
        Family::Automation
    } else {
        Family::Other
    }
}

/// The operating system of `ua`.
pub fn os(ua: &str) -> Os {
    if ua.is_empty() {
        return Os::Unknown;
    }
    let has = |s: &str| ua.contains(s);
    // Order matters: iOS agents say "like Mac OS X", Android agents say "Linux".
    if has("Windows") {
        Os::Windows
    } else if has("iPhone") || has("iPad") || has("iPod") {
        Os::Ios
    } else if has("Android") {
        Os::Android
    } else if has("CrOS") {
        Os::ChromeOs
    } else if has("Macintosh") || has("Mac OS X") {
        Os::MacOs
    } else if has("Linux") {
        Os::Linux
    } else {
        Os::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_agents() {
        let iphone = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1";
        assert_eq!(family(iphone), Family::Safari);
        assert_eq!(os(iphone), Os::Ios);
        let android = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36";
        assert_eq!(family(android), Family::Chrome);
        assert_eq!(os(android), Os::Android);
        let edge = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Edg/120.0.0.0";
        assert_eq!(family(edge), Family::Edge);
        assert_eq!(os(edge), Os::Windows);
        assert_eq!(family("curl/8.4.0"), Family::Automation);
        assert_eq!(family(""), Family::Unknown);
    }
}
