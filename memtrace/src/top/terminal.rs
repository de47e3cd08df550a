//! The terminal while `top` runs: raw mode and the alternate screen, given back on every way
//! out — a normal return, an error, and a panic (ratatui's hook restores it before the panic
//! is printed, ours shows the cursor again).
use std::io;

use crossterm::{cursor, execute};
use ratatui::DefaultTerminal;

/// Owns the terminal; dropping it restores the user's screen.
pub struct Screen {
    pub terminal: DefaultTerminal,
}

impl Screen {
    pub fn enter() -> io::Result<Self> {
        // Installed first, so that ratatui's (which restores the screen) runs before it.
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let _ = execute!(io::stdout(), cursor::Show);
            previous(info);
        }));
        let mut terminal = ratatui::try_init()?;
        terminal.clear()?;
        Ok(Self { terminal })
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = ratatui::try_restore();
        let _ = execute!(io::stdout(), cursor::Show);
    }
}
