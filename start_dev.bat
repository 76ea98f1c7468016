@echo off
rem start_dev.bat: one command for a Windows developer. Double-click it or run it from any
rem folder. It prepares Python (.venv + requirements), then runs
rem   invoke fetch, invoke start, invoke verify   (stopping at the first failure)
rem and finally what `invoke up` runs for the application (api.command plus app.processes or
rem a Procfile: `invoke up --no-fetch --no-verify`, those two steps being done).
rem
rem DEV_PYTHON=C:\path\to\python.exe (or any .cmd wrapper): use that interpreter for every step
rem as-is; no venv is created and nothing is installed. The tests use it with a stub.
rem DEV_NO_PAUSE=1: do not wait for a key press at the end. Without it the window stays open
rem (a double-clicked script's window would otherwise close before the message can be read);
rem the tests and CI set it.
rem
rem Every exit goes through :end (the pause, popd, the code page, the exit code). Exit codes are tested with
rem  if not "%errorlevel%"=="0"  because "if errorlevel 1" means ">= 1" and misses negative
rem codes (NTSTATUS values such as 0xC000013A, a Ctrl+C exit, are negative in cmd).
rem
rem Kept deliberately plain (no findstr, no delayed expansion, no && after a pipe, no
rem PowerShell) because Wine's cmd, where it is tested, differs from Windows' cmd there.
rem Checked under Wine 8: the DEV_PYTHON path, step order, failures, exit codes (negative
rem too), missing Python, the pause and DEV_NO_PAUSE, and the existing-venv branch with a
rem stub python.exe (stop before pip, pip failing). The venv creation and the fc comparison
rem need a real Windows Python and Windows' fc (Wine's fc is a stub that always reports
rem "same"): the GitHub Actions workflow (.github/workflows/windows.yml) runs those.

setlocal
set "RC=0"
rem UTF-8 console, so the server's log lines and the tool's messages show correctly. The
rem code page is the console's, not this script's (setlocal does not restore it): the one in
rem force is kept in OLD_CP and set again at :end, which every exit goes through. chcp prints
rem e.g. "Active code page: 850" or, localised, "Aktive Codepage: 850.": the text after the
rem colon, without spaces and a final dot. (A Ctrl+C answered "Y" at "Terminate batch job"
rem ends the script without :end: then the console keeps 65001.)
set "OLD_CP="
for /f "tokens=2 delims=:" %%c in ('chcp') do set "OLD_CP=%%c"
if defined OLD_CP set "OLD_CP=%OLD_CP: =%"
if defined OLD_CP set "OLD_CP=%OLD_CP:.=%"
chcp 65001 >nul 2>&1

rem Work from the script's own folder (quoted: the path may contain spaces). pushd, not cd:
rem for a UNC path (\\server\share\...) it maps a temporary drive letter, which popd removes.
rem Checked by looking for the script itself: pushd does not reset errorlevel on success.
pushd "%~dp0"
if not exist "%~nx0" goto :no_folder

if not defined DEV_PYTHON goto :venv
rem Quotes around the value (set DEV_PYTHON="C:\Program Files\...") are dropped: we add our own.
set "PY=%DEV_PYTHON:"=%"
echo Using DEV_PYTHON as-is (no venv, no install): "%PY%"
goto :steps

:venv
set "PY=%CD%\.venv\Scripts\python.exe"
set "STAMP=%CD%\.venv\requirements.installed.txt"
set "NEW_VENV="
if not exist "%PY%" goto :find_python
call "%PY%" -c "import sys" >nul 2>&1
if "%errorlevel%"=="0" goto :requirements
echo The virtual environment in .venv is broken (its python does not start): recreating it.
rmdir /s /q ".venv"
if exist ".venv" goto :venv_locked

:find_python
rem The py launcher first (the python.org installer's default), then python on PATH. The
rem Microsoft Store's python.exe alias fails this check (exit 9009) like a missing one.
set "BASE_PY=py"
set "BASE_ARGS=-3"
call py -3 -c "import sys; sys.exit(sys.version_info < (3, 10))" >nul 2>&1
if "%errorlevel%"=="0" goto :make_venv
set "BASE_PY=python"
set "BASE_ARGS="
call python -c "import sys; sys.exit(sys.version_info < (3, 10))" >nul 2>&1
if "%errorlevel%"=="0" goto :make_venv
echo.
echo error: Python 3.10 or newer was not found (tried "py -3" and "python").
echo hint: install it from https://www.python.org/downloads/windows/ and tick the option
echo       "Add python.exe to PATH" (or: winget install Python.Python.3.12), then run
echo       start_dev.bat again.
echo       Or set DEV_PYTHON to the full path of a python.exe to use.
set "RC=1"
goto :end

:make_venv
echo Creating the virtual environment in .venv ...
call %BASE_PY% %BASE_ARGS% -m venv ".venv"
if not "%errorlevel%"=="0" goto :venv_failed
if not exist "%PY%" goto :venv_failed
if exist "%STAMP%" del "%STAMP%"
set "NEW_VENV=1"

:requirements
rem Install only when requirements.txt changed since the last successful install: the stamp
rem is a copy of the file as it was then (fc /b: byte compare, errorlevel 0 when equal).
if not exist "%STAMP%" goto :install
fc /b "requirements.txt" "%STAMP%" >nul 2>&1
if not "%errorlevel%"=="0" goto :install
echo Requirements unchanged since the last install.
goto :steps

:install
if defined NEW_VENV goto :pip
rem A server started from this venv keeps its supervisor's Python and psutil's .pyd open,
rem and pip would then fail with "Access is denied" (WinError 5): stop it first.
echo Requirements changed: stopping the server first, so pip can replace files in .venv ...
call "%PY%" -m invoke stop

:pip
echo Installing requirements (requirements.txt changed or never installed) ...
call "%PY%" -m pip install --disable-pip-version-check -r requirements.txt
if not "%errorlevel%"=="0" goto :install_failed
copy /y "requirements.txt" "%STAMP%" >nul

:steps
rem Each step is its own call so a failure names its step; fetch makes no network call when
rem a binary is already installed, so this works offline after the first run.
set "STEP=fetch"
echo.
echo ==^> invoke fetch
call "%PY%" -m invoke fetch
if not "%errorlevel%"=="0" goto :step_failed
set "STEP=start"
echo.
echo ==^> invoke start
call "%PY%" -m invoke start
if not "%errorlevel%"=="0" goto :step_failed
set "STEP=verify"
echo.
echo ==^> invoke verify
call "%PY%" -m invoke verify
if not "%errorlevel%"=="0" goto :step_failed
echo.
echo The server is running. To use invoke yourself: .venv\Scripts\activate.bat, then invoke status
echo   (or without activating: .venv\Scripts\invoke status; with DEV_PYTHON: "%PY%" -m invoke status)
echo.
echo ==^> invoke up --no-fetch --no-verify: the application (Ctrl+C stops it; the server keeps running: invoke down stops both)
call "%PY%" -m invoke up --no-fetch --no-verify
rem The application's own exit code is the script's.
set "RC=%errorlevel%"
goto :end

:step_failed
echo.
echo error: the %STEP% step failed, so the application was not started.
echo hint: see the server log with: "%PY%" -m invoke tail   (and -f to follow it)
set "RC=1"
goto :end

:install_failed
echo.
echo error: installing the requirements failed (see pip's output above).
echo hint: check the network or proxy (HTTPS_PROXY); "Access is denied" means a program
echo       still uses files in .venv (a server: "%PY%" -m invoke stop). Then run
echo       start_dev.bat again.
set "RC=1"
goto :end

:venv_failed
echo.
echo error: creating the virtual environment in .venv failed.
echo hint: repair or reinstall Python from https://www.python.org/downloads/windows/
set "RC=1"
goto :end

:venv_locked
echo.
echo error: could not delete the broken .venv folder (a program may be using it).
echo hint: close programs running from .venv, delete the folder, and run start_dev.bat again.
set "RC=1"
goto :end

:no_folder
echo error: cannot change to the script's folder "%~dp0"
set "RC=1"
goto :end

:end
popd
if defined OLD_CP chcp %OLD_CP% >nul 2>&1
if defined DEV_NO_PAUSE goto :exit
echo.
rem A double-clicked script's window closes when it ends: keep it open until a key press.
pause

:exit
exit /b %RC%
