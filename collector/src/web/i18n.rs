//! Russian and English: the language comes from the `lang` cookie (set by `?lang=ru|en`), else
//! the browser's `Accept-Language`, else English. Every visible string is a [`T`] with both
//! texts side by side, so a missing translation is a compile error. Numbers and dates are
//! written the way each language's readers write them.

use commscan_core::verdict::Status;
use time::OffsetDateTime;

/// A reader's language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// English.
    En,
    /// Russian.
    Ru,
}

impl Lang {
    /// `en` or `ru`.
    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Ru => "ru",
        }
    }

    /// The language named `code`.
    pub fn from_code(code: &str) -> Option<Lang> {
        match code.trim().to_ascii_lowercase().as_str() {
            "en" => Some(Lang::En),
            "ru" => Some(Lang::Ru),
            _ => None,
        }
    }

    /// The first of `ru`/`en` an `Accept-Language` header names (quality order), else
    /// English.
    pub fn from_accept_language(header: &str) -> Lang {
        let mut best: Option<(f32, Lang)> = None;
        for part in header.split(',').take(20) {
            let mut it = part.split(';');
            let tag = it.next().unwrap_or("").trim();
            let q = it
                .find_map(|p| p.trim().strip_prefix("q="))
                .and_then(|q| q.parse::<f32>().ok())
                .unwrap_or(1.0);
            let primary = tag.split('-').next().unwrap_or("");
            if let Some(lang) = Lang::from_code(primary)
                && best.is_none_or(|(bq, _)| q > bq)
            {
                best = Some((q, lang));
            }
        }
        best.map_or(Lang::En, |(_, l)| l)
    }

    /// A whole number with the language's thousands separator.
    pub fn int(self, n: u64) -> String {
        let digits = n.to_string();
        let sep = match self {
            Lang::En => ",",
            Lang::Ru => "\u{a0}",
        };
        let mut out = String::with_capacity(digits.len() + digits.len() / 3);
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push_str(sep);
            }
            out.push(c);
        }
        out
    }

    /// A percentage with one decimal.
    pub fn percent(self, p: f64) -> String {
        let s = format!("{p:.1}");
        match self {
            Lang::En => format!("{s}%"),
            Lang::Ru => format!("{}\u{a0}%", s.replace('.', ",")),
        }
    }

    /// A UTC date and time to the minute.
    pub fn datetime(self, t: OffsetDateTime) -> String {
        let t = t.to_offset(time::UtcOffset::UTC);
        match self {
            Lang::En => format!(
                "{:04}-{:02}-{:02} {:02}:{:02} UTC",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute()
            ),
            Lang::Ru => format!(
                "{:02}.{:02}.{:04} {:02}:{:02} UTC",
                t.day(),
                u8::from(t.month()),
                t.year(),
                t.hour(),
                t.minute()
            ),
        }
    }

    /// A day given as `YYYY-MM-DD`, in the language's order.
    pub fn day(self, iso: &str) -> String {
        match (self, iso.split('-').collect::<Vec<_>>().as_slice()) {
            (Lang::Ru, [y, m, d]) => format!("{d}.{m}.{y}"),
            _ => iso.to_owned(),
        }
    }

    /// A status's name.
    pub fn status(self, s: Status) -> &'static str {
        match s {
            Status::Compliant => self.t(T::Compliant),
            Status::Noncompliant => self.t(T::Noncompliant),
            Status::Waived => self.t(T::Waived),
            Status::Stale => self.t(T::Stale),
            Status::Unknown => self.t(T::Unknown),
        }
    }
}

macro_rules! texts {
    ($($key:ident => $en:literal, $ru:literal;)*) => {
        /// A visible string.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[allow(missing_docs)]
        pub enum T { $($key),* }

        impl Lang {
            /// `key` in this language.
            pub fn t(self, key: T) -> &'static str {
                match (self, key) {
                    $((Lang::En, T::$key) => $en, (Lang::Ru, T::$key) => $ru,)*
                }
            }
        }
    };
}

texts! {
    Title => "commscan console", "Консоль commscan";
    SignIn => "Sign in", "Войти";
    SignOut => "Sign out", "Выйти";
    Token => "Access token", "Токен доступа";
    TokenHelp => "Your bearer token (from your administrator, or `commscanctl people add`). It is exchanged for a session; the browser does not keep it.", "Ваш токен доступа (от администратора или `commscanctl people add`). Он обменивается на сеанс; браузер его не хранит.";
    BadToken => "This token is not accepted.", "Этот токен не принят.";
    LinkUsed => "This sign-in link was used or has expired.", "Эта ссылка для входа уже использована или истекла.";
    SessionEnded => "Your session ended. Sign in again.", "Сеанс завершён. Войдите снова.";
    Fleet => "Fleet", "Парк устройств";
    Organisations => "Organisations", "Организации";
    Organisation => "Organisation", "Организация";
    Enterprise => "Enterprise", "Предприятие";
    Enterprises => "Enterprises", "Предприятия";
    Devices => "Devices", "Устройства";
    Device => "Device", "Устройство";
    PercentCompliant => "% compliant", "% соответствия";
    CompliantShare => "of devices compliant", "устройств соответствуют";
    DeviceCount => "devices", "устройств";
    NoDevicesYet => "No device has enrolled yet.", "Ни одно устройство ещё не зарегистрировано.";
    Continue => "Continue to the console", "Перейти в консоль";
    Compliant => "compliant", "соответствует";
    Noncompliant => "noncompliant", "нарушение";
    Waived => "waived", "исключение";
    Stale => "stale", "нет связи";
    Unknown => "unknown", "неизвестно";
    Revoked => "revoked", "отозвано";
    Status => "Status", "Статус";
    Trend => "Compliance over time", "Соответствие во времени";
    Days30 => "30 days", "30 дней";
    Days90 => "90 days", "90 дней";
    NoTrend => "No trend points yet.", "Точек тренда пока нет.";
    Products => "Products", "Продукты";
    Product => "Product", "Продукт";
    Violating => "Violating devices", "С нарушением";
    Platform => "Platform", "Платформа";
    Hostname => "Host name", "Имя хоста";
    LastReport => "Last report", "Последний отчёт";
    Never => "never", "никогда";
    Filter => "Filter", "Фильтр";
    Any => "any", "любой";
    Next => "Next page", "Следующая страница";
    ExportCsv => "Export CSV", "Экспорт CSV";
    ExportJson => "Export JSON", "Экспорт JSON";
    NoDevices => "No devices match.", "Нет подходящих устройств.";
    Findings => "Findings", "Находки";
    Evidence => "Evidence", "Признаки";
    Version => "Version", "Версия";
    Installed => "installed", "установлено";
    Running => "running", "запущено";
    Reasons => "Reasons", "Причины";
    History => "History", "История";
    Waivers => "Waivers", "Исключения";
    NoWaivers => "No waiver covers this device.", "Исключений для устройства нет.";
    Sources => "Sources of the last scan", "Источники последнего сканирования";
    Source => "Source", "Источник";
    Outcome => "Outcome", "Результат";
    Certificate => "Certificate", "Сертификат";
    Enrolled => "Enrolled", "Зарегистрировано";
    Agent => "Agent", "Агент";
    Policy => "Policy", "Политика";
    Duplicate => "Flagged as a duplicate enrolment", "Помечено как дубликат регистрации";
    Candidates => "Unclassified", "Неизвестное ПО";
    Candidate => "Application", "Приложение";
    Map => "Map to product", "Сопоставить";
    Dismiss => "Dismiss", "Скрыть";
    Mapped => "Mapped", "Сопоставлено";
    Dismissed => "Dismissed", "Скрыто";
    NoCandidates => "Nothing unclassified.", "Неизвестного ПО нет.";
    LooksLike => "looks like", "похоже на";
    Tokens => "Enrolment tokens", "Токены регистрации";
    CreateToken => "Create token", "Создать токен";
    Uses => "Uses", "Использований";
    Unlimited => "unlimited", "без ограничений";
    Expires => "Expires", "Истекает";
    Created => "Created", "Создан";
    Revoke => "Revoke", "Отозвать";
    Active => "active", "активен";
    SecretOnce => "Secret (shown once; give it to `commscan-agent enroll`)", "Секрет (показывается один раз; передайте его `commscan-agent enroll`)";
    People => "People", "Пользователи";
    Name => "Name", "Имя";
    Grants => "Grants", "Права";
    AddPerson => "Add person", "Добавить";
    GrantHelp => "role or role:organisation, e.g. officer:acme; several separated by spaces", "роль или роль:организация, например officer:acme; несколько через пробел";
    TokenOnce => "Their bearer token (shown once; give it to them over a trusted channel)", "Токен доступа (показывается один раз; передайте по доверенному каналу)";
    Role => "Role", "Роль";
    Audit => "Audit log", "Журнал аудита";
    When => "When", "Когда";
    Who => "Who", "Кто";
    Action => "Action", "Действие";
    Allowed => "allowed", "разрешено";
    Denied => "denied", "запрещено";
    Detail => "Detail", "Подробности";
    Older => "Next entries", "Следующие записи";
    Updated => "Updated", "Обновлено";
    Freshness => "Freshness", "Актуальность";
    Fresh => "fresh", "актуально";
    NoEnterprises => "No enterprise reports to this collector.", "Предприятия не передают данные этому коллектору.";
    Forbidden => "You may not see this.", "У вас нет доступа к этой странице.";
    NotFound => "Not found.", "Не найдено.";
    Invalid => "Not accepted", "Не принято";
    Unavailable => "The store is unavailable; try again shortly.", "Хранилище недоступно; повторите позже.";
    Live => "Live: verdict changes appear here as they happen.", "Изменения статусов появляются здесь сразу.";
    Changed => "changed", "изменено";
    Language => "Language", "Язык";
    Total => "Total", "Всего";
    Done => "Done.", "Готово.";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reader_s_language_and_their_way_of_writing_numbers() {
        assert_eq!(
            Lang::from_accept_language("ru-RU,ru;q=0.9,en;q=0.8"),
            Lang::Ru
        );
        assert_eq!(
            Lang::from_accept_language("de-DE,en;q=0.5,ru;q=0.4"),
            Lang::En
        );
        assert_eq!(Lang::from_accept_language("fr"), Lang::En);
        assert_eq!(Lang::Ru.int(1234567), "1\u{a0}234\u{a0}567");
        assert_eq!(Lang::En.int(1234567), "1,234,567");
        assert_eq!(Lang::En.int(999), "999");
        assert_eq!(Lang::Ru.percent(97.25), "97,2\u{a0}%");
        assert_eq!(Lang::Ru.day("2026-11-30"), "30.11.2026");
        let t = time::macros::datetime!(2026-11-30 08:05 UTC);
        assert_eq!(Lang::Ru.datetime(t), "30.11.2026 08:05 UTC");
        assert_eq!(Lang::En.datetime(t), "2026-11-30 08:05 UTC");
    }
}
