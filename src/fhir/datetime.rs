//! HL7 v2 date/time values (DT, DTM/TS, TM) → FHIR `date`, `dateTime`, `instant`, `time`.
//! Partial values stay partial; a time without an offset gets the offset of a configured IANA
//! zone at that moment (daylight saving included).

use jiff::civil::DateTime;
use jiff::tz::TimeZone;

/// A parsed HL7 DTM with its precision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dtm {
    /// Year.
    pub year: i16,
    /// Month, if given.
    pub month: Option<i8>,
    /// Day, if given.
    pub day: Option<i8>,
    /// Hour, if given.
    pub hour: Option<i8>,
    /// Minute, if given.
    pub minute: Option<i8>,
    /// Second, if given.
    pub second: Option<i8>,
    /// Fraction digits as sent (`"1234"` for `.1234`).
    pub fraction: String,
    /// Offset from UTC in minutes, if sent.
    pub offset: Option<i32>,
}

fn num(s: &str, what: &str) -> Result<i32, String> {
    if s.bytes().all(|b| b.is_ascii_digit()) && !s.is_empty() {
        s.parse::<i32>()
            .map_err(|_| format!("{what} '{s}' is not a number"))
    } else {
        Err(format!("{what} is not numeric"))
    }
}

fn days_in_month(y: i32, m: i32) -> i32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// A µs timestamp (since the Unix epoch) as a FHIR `instant` in UTC with milliseconds
/// (`meta.lastUpdated`, history `response.lastModified`).
pub fn instant_from_micros(us: i64) -> String {
    match jiff::Timestamp::from_microsecond(us) {
        Ok(t) => t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        Err(_) => "1970-01-01T00:00:00.000Z".into(),
    }
}

/// Parse `YYYY[MM[DD[HH[MM[SS[.S+]]]]]][+/-ZZZZ]`. Errors say what is wrong (never the value).
pub fn parse_dtm(s: &str) -> Result<Dtm, String> {
    let s = s.trim();
    // Everything below slices by byte position: only ASCII input is a candidate.
    if !s.is_ascii() {
        return Err("date/time holds non-ASCII characters".into());
    }
    let (body, offset) = match s.find(['+', '-']) {
        Some(i) if i >= 4 => {
            let (b, o) = s.split_at(i);
            let sign = if o.starts_with('-') { -1 } else { 1 };
            let digits = &o[1..];
            if digits.len() != 4 {
                return Err("time zone offset must be +HHMM or -HHMM".into());
            }
            let h = num(&digits[..2], "offset hours")?;
            let m = num(&digits[2..], "offset minutes")?;
            if h > 14 || m > 59 {
                return Err("time zone offset out of range".into());
            }
            (b, Some(sign * (h * 60 + m)))
        }
        Some(_) => return Err("a date must start with a four-digit year".into()),
        None => (s, None),
    };
    let (main, fraction) = match body.split_once('.') {
        Some((m, f)) => {
            if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) {
                return Err("fractional seconds must be digits".into());
            }
            (m, f.to_string())
        }
        None => (body, String::new()),
    };
    if !main.bytes().all(|b| b.is_ascii_digit()) {
        return Err("date/time must be digits".into());
    }
    if !matches!(main.len(), 4 | 6 | 8 | 10 | 12 | 14) {
        return Err(format!(
            "date/time has {} digits; expected 4, 6, 8, 10, 12 or 14",
            main.len()
        ));
    }
    if !fraction.is_empty() && main.len() != 14 {
        return Err("fractional seconds need a full time".into());
    }
    let part = |a: usize, b: usize| main.get(a..b).map(|p| num(p, "date part")).transpose();
    let year = num(&main[..4], "year")?;
    if year == 0 {
        return Err("year 0000 does not exist".into());
    }
    let month = part(4, 6)?;
    let day = part(6, 8)?;
    let hour = part(8, 10)?;
    let minute = part(10, 12)?;
    let second = part(12, 14)?;
    if let Some(m) = month {
        if !(1..=12).contains(&m) {
            return Err("month out of range".into());
        }
        if let Some(d) = day
            && (d < 1 || d > days_in_month(year, m))
        {
            return Err("day out of range for its month".into());
        }
    }
    if hour.is_some_and(|h| h > 23)
        || minute.is_some_and(|m| m > 59)
        || second.is_some_and(|s| s > 60)
    {
        return Err("time out of range".into());
    }
    let c = |v: Option<i32>| v.map(|x| x as i8);
    Ok(Dtm {
        year: year as i16,
        month: c(month),
        day: c(day),
        hour: c(hour),
        minute: c(minute),
        second: c(second),
        fraction,
        offset,
    })
}

fn fmt_offset(minutes: i32) -> String {
    if minutes == 0 {
        return "Z".into();
    }
    let sign = if minutes < 0 { '-' } else { '+' };
    let m = minutes.abs();
    format!("{sign}{:02}:{:02}", m / 60, m % 60)
}

/// A unit of a duration ([`Dtm::moved`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurationUnit {
    /// Seconds.
    Second,
    /// Minutes.
    Minute,
    /// Hours.
    Hour,
    /// Calendar days.
    Day,
    /// Weeks.
    Week,
    /// Calendar months.
    Month,
    /// Calendar years.
    Year,
}

impl DurationUnit {
    /// The unit as senders write it (UCUM, ANSI and words, any case): `s`, `sec`, `min`, `h`,
    /// `hr`, `d`, `wk`, `mo`, `a`, `yr`, `second(s)` … `year(s)`.
    pub fn parse(s: &str) -> Option<DurationUnit> {
        use DurationUnit::*;
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "s" | "sec" | "second" | "seconds" => Second,
            "min" | "minute" | "minutes" => Minute,
            "h" | "hr" | "hour" | "hours" => Hour,
            "d" | "day" | "days" => Day,
            "wk" | "week" | "weeks" => Week,
            "mo" | "month" | "months" => Month,
            "a" | "yr" | "year" | "years" => Year,
            _ => return None,
        })
    }

    /// Seconds per unit, for the units of fixed length.
    fn seconds(self) -> Option<f64> {
        match self {
            DurationUnit::Second => Some(1.0),
            DurationUnit::Minute => Some(60.0),
            DurationUnit::Hour => Some(3600.0),
            _ => None,
        }
    }
}

impl Dtm {
    /// This date/time moved by `amount` `unit`s (negative: back): hours, minutes and seconds
    /// as elapsed time (a whole number of seconds in all), days, weeks, months and years on the
    /// calendar (whole numbers; the 31st plus a month is the month's last day). The result keeps
    /// the offset and the fraction sent, and this value's precision unless the move needs a
    /// finer one (10:00 plus 90 minutes is 11:30). An error for a date without a day, a date
    /// without a time moved by hours or less, a fractional calendar amount, or a result out of
    /// range.
    pub fn moved(&self, amount: f64, unit: DurationUnit) -> Result<Dtm, String> {
        let (Some(month), Some(day)) = (self.month, self.day) else {
            return Err("a date/time without a day cannot be moved by a duration".into());
        };
        let whole = |x: f64| (x - x.round()).abs() < 1e-9 && x.abs() < 1e12;
        let span = match unit.seconds() {
            Some(per) => {
                if self.hour.is_none() {
                    return Err("a date without a time cannot be moved by hours or less".into());
                }
                let s = amount * per;
                if !whole(s) {
                    return Err("the duration is not a whole number of seconds".into());
                }
                jiff::Span::new().try_seconds(s.round() as i64)
            }
            None => {
                if !whole(amount) {
                    return Err("a duration in days, weeks, months or years must be whole".into());
                }
                let n = amount.round() as i64;
                match unit {
                    DurationUnit::Day => jiff::Span::new().try_days(n),
                    DurationUnit::Week => jiff::Span::new().try_weeks(n),
                    DurationUnit::Month => jiff::Span::new().try_months(n),
                    _ => jiff::Span::new().try_years(n),
                }
            }
        }
        .map_err(|_| "the duration is out of range".to_string())?;
        let start = DateTime::new(
            self.year,
            month,
            day,
            self.hour.unwrap_or(0),
            self.minute.unwrap_or(0),
            self.second.unwrap_or(0).min(59),
            0,
        )
        .map_err(|_| "the date/time is not a valid calendar date".to_string())?;
        let end = start
            .checked_add(span)
            .map_err(|_| "the moved date/time is out of range".to_string())?;
        let second = (self.second.is_some() || end.second() != 0).then(|| end.second());
        let minute =
            (self.minute.is_some() || end.minute() != 0 || second.is_some()).then(|| end.minute());
        Ok(Dtm {
            year: end.year(),
            month: Some(end.month()),
            day: Some(end.day()),
            hour: self.hour.map(|_| end.hour()),
            minute: self.hour.and(minute),
            second: self.hour.and(second),
            fraction: self.fraction.clone(),
            offset: self.offset,
        })
    }

    /// FHIR `date`: `YYYY`, `YYYY-MM` or `YYYY-MM-DD` (time dropped).
    pub fn to_date(&self) -> String {
        match (self.month, self.day) {
            (Some(m), Some(d)) => format!("{:04}-{:02}-{:02}", self.year, m, d),
            (Some(m), None) => format!("{:04}-{:02}", self.year, m),
            _ => format!("{:04}", self.year),
        }
    }

    /// FHIR `dateTime`. Dates stay partial; a time gets minutes/seconds padded and an offset
    /// (the sent one, else the zone's offset at that local time).
    pub fn to_datetime(&self, zone: &TimeZone) -> String {
        let (Some(m), Some(d), Some(h)) = (self.month, self.day, self.hour) else {
            return self.to_date();
        };
        let mi = self.minute.unwrap_or(0);
        let s = self.second.unwrap_or(0).min(59);
        let frac = if self.fraction.is_empty() {
            String::new()
        } else {
            format!(".{}", self.fraction)
        };
        let offset = match self.offset {
            Some(o) => o,
            None => {
                let civil = DateTime::new(self.year, m, d, h, mi, s, 0);
                match civil
                    .ok()
                    .and_then(|c| zone.to_ambiguous_zoned_datetime(c).compatible().ok())
                {
                    Some(z) => z.offset().seconds() / 60,
                    None => 0,
                }
            }
        };
        format!(
            "{:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}{frac}{}",
            self.year,
            fmt_offset(offset)
        )
    }

    /// FHIR `instant` (needs a full time; missing parts are zero).
    pub fn to_instant(&self, zone: &TimeZone) -> String {
        let full = Dtm {
            month: Some(self.month.unwrap_or(1)),
            day: Some(self.day.unwrap_or(1)),
            hour: Some(self.hour.unwrap_or(0)),
            ..self.clone()
        };
        full.to_datetime(zone)
    }
}

/// HL7 TM `HH[MM[SS[.S+]]][+/-ZZZZ]` → FHIR `time` `hh:mm:ss` (offset dropped: FHIR time has none).
pub fn tm_to_time(s: &str) -> Result<String, String> {
    let s = s.trim();
    if !s.is_ascii() {
        return Err("time holds non-ASCII characters".into());
    }
    let body = s.split(['+', '-']).next().unwrap_or(s);
    let (main, frac) = body.split_once('.').unwrap_or((body, ""));
    if !main.bytes().all(|b| b.is_ascii_digit()) || !matches!(main.len(), 2 | 4 | 6) {
        return Err("time must be HH, HHMM or HHMMSS".into());
    }
    let h = num(&main[..2], "hour")?;
    let m = main
        .get(2..4)
        .map(|x| num(x, "minute"))
        .transpose()?
        .unwrap_or(0);
    let sec = main
        .get(4..6)
        .map(|x| num(x, "second"))
        .transpose()?
        .unwrap_or(0);
    if h > 23 || m > 59 || sec > 59 {
        return Err("time out of range".into());
    }
    if !frac.is_empty() && !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err("fractional seconds must be digits".into());
    }
    let f = if frac.is_empty() {
        String::new()
    } else {
        format!(".{frac}")
    };
    Ok(format!("{h:02}:{m:02}:{sec:02}{f}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions() {
        let utc = TimeZone::UTC;
        let ny = TimeZone::get("America/New_York").expect("tzdb");
        // (input, date, dateTime in UTC zone, dateTime in New York)
        let cases = [
            ("2024", "2024", "2024", "2024"),
            ("202402", "2024-02", "2024-02", "2024-02"),
            ("20240229", "2024-02-29", "2024-02-29", "2024-02-29"),
            (
                "2024022913",
                "2024-02-29",
                "2024-02-29T13:00:00Z",
                "2024-02-29T13:00:00-05:00",
            ),
            (
                "202407041230",
                "2024-07-04",
                "2024-07-04T12:30:00Z",
                "2024-07-04T12:30:00-04:00",
            ),
            (
                "20240704123045.123",
                "2024-07-04",
                "2024-07-04T12:30:45.123Z",
                "2024-07-04T12:30:45.123-04:00",
            ),
            (
                "198908181126+0215",
                "1989-08-18",
                "1989-08-18T11:26:00+02:15",
                "1989-08-18T11:26:00+02:15",
            ),
            (
                "20240101000000-0500",
                "2024-01-01",
                "2024-01-01T00:00:00-05:00",
                "2024-01-01T00:00:00-05:00",
            ),
        ];
        for (input, date, dt_utc, dt_ny) in cases {
            let d = parse_dtm(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(d.to_date(), date, "{input}");
            assert_eq!(d.to_datetime(&utc), dt_utc, "{input}");
            assert_eq!(d.to_datetime(&ny), dt_ny, "{input}");
        }
        assert_eq!(
            parse_dtm("2024").expect("y").to_instant(&utc),
            "2024-01-01T00:00:00Z"
        );
    }

    #[test]
    fn invalid_values_are_errors() {
        for bad in [
            "",
            "20",
            "2024131",
            "20241301",
            "20240230",
            "2024010125",
            "20240101126060",
            "x2024",
            "2024-01-01",
            "20240101+05",
            "202401.5",
        ] {
            assert!(parse_dtm(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn times() {
        assert_eq!(tm_to_time("1230").as_deref(), Ok("12:30:00"));
        assert_eq!(tm_to_time("123045.5").as_deref(), Ok("12:30:45.5"));
        assert_eq!(tm_to_time("08+0100").as_deref(), Ok("08:00:00"));
        assert!(tm_to_time("2561").is_err());
        assert!(tm_to_time("12\u{81}0").is_err());
        assert!(tm_to_time("1230+0\u{81}").is_err());
    }
}
