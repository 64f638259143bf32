# Installs commscan-agent.exe as a Windows service, NOT YET USABLE: the agent has no
# Windows service-control glue yet (it would need to answer the Service Control Manager;
# without it, SCM kills the process after its start timeout). This script documents the
# intended installation and is kept in step with the Linux and macOS units. See README.md.
#
# Run in an elevated PowerShell:
#   .\install-agent.ps1 -Exe "C:\Program Files\commscan\commscan-agent.exe"
param(
    [string]$Exe = "C:\Program Files\commscan\commscan-agent.exe",
    [string]$Config = "C:\ProgramData\commscan\agent.toml",
    [string]$DataDir = "C:\ProgramData\commscan\agent"
)
$ErrorActionPreference = "Stop"
New-Item -ItemType Directory -Force -Path $DataDir | Out-Null
# Data directory: SYSTEM and Administrators only.
icacls $DataDir /inheritance:r /grant:r "SYSTEM:(OI)(CI)F" "Administrators:(OI)(CI)F" | Out-Null
& $Exe validate --config $Config
if ($LASTEXITCODE -ne 0) { throw "configuration invalid (exit $LASTEXITCODE)" }
New-Service -Name "commscan-agent" -DisplayName "commscan agent" `
    -Description "Inventories communication software and reports it to the commscan collector" `
    -BinaryPathName "`"$Exe`" run --config `"$Config`" --data-dir `"$DataDir`"" `
    -StartupType Automatic
# Restart after failures: 10 s, 10 s, then 60 s; reset the count after a day.
sc.exe failure commscan-agent reset= 86400 actions= restart/10000/restart/10000/restart/60000 | Out-Null
Write-Host "installed; start with: Start-Service commscan-agent"
