<#
.SYNOPSIS
    Give the SubmitWatch account the least access it needs on one Exchange server.

.DESCRIPTION
    SubmitWatch reads the Application event log with wevtutil through a WinRM (WinRS) cmd
    shell. That needs three things and nothing more (no administrator rights, no Exchange role):

      1. membership of Event Log Readers (S-1-5-32-573): read access to the Application log;
      2. membership of Remote Management Users (S-1-5-32-580): may connect to WinRM;
      3. Read and Execute for Remote Management Users in WinRM's RootSDDL, the security
         descriptor of the cmd shell pywinrm uses. Its default allows only Administrators and
         Interactive Users, so without this step the account signs in and is then refused
         ("Access is denied", WS-Management fault 5; pywinrm issues 336 and 362).

    One more step is optional, with -ProtocolLogs: SubmitWatch names the device behind a
    failure from Exchange's SMTP Receive protocol log, which it reads (read-only) from two
    folders, the Front End Transport service's and the Transport service's:

      4. Read and Execute for the account on those two folders, inherited by the files in them
         (ReadAndExecute, ObjectInherit): it may list them and open their files for reading.
         Nothing else: no subfolder, no folder above them, no write. The folders are the
         defaults under the machine's ExchangeInstallPath, or the ones given with
         -FrontEndProtocolLogPath and -HubProtocolLogPath. Whether the folders' own access list
         already lets the account read them is not known to us (not verified on a real server);
         `submitwatch check` says whether it can.

    Run it in an elevated Windows PowerShell on the server. It is idempotent: what is in place
    already is left as it is. It prints RootSDDL before and after. With -WhatIf it changes
    nothing and says what it would do.

    Docs: docs/windows-setup.md in the SubmitWatch repository.

.PARAMETER Account
    The account SubmitWatch signs in as, for example CONTOSO\svc-submitwatch.

.PARAMETER ProtocolLogs
    Also do step 4: grant the account Read and Execute on the two SMTP Receive protocol log
    folders and their files. A folder that does not exist is named and skipped.

.PARAMETER FrontEndProtocolLogPath
    With -ProtocolLogs: the Front End Transport service's folder, where Exchange writes it
    somewhere other than the default (Get-FrontendTransportService <server> | Format-List
    ReceiveProtocolLogPath shows it). The same folder as servers.frontend_protocol_log.

.PARAMETER HubProtocolLogPath
    With -ProtocolLogs: the Transport service's folder, where Exchange writes it somewhere
    other than the default (Get-TransportService <server> | Format-List
    ReceiveProtocolLogPath). The same folder as servers.hub_protocol_log.

.EXAMPLE
    .\Grant-SubmitWatchAccess.ps1 -Account 'CONTOSO\svc-submitwatch' -WhatIf

.EXAMPLE
    .\Grant-SubmitWatchAccess.ps1 -Account 'CONTOSO\svc-submitwatch' -ProtocolLogs -WhatIf
#>
[CmdletBinding(SupportsShouldProcess = $true)]
param(
    [Parameter(Mandatory = $true)]
    [string] $Account,

    [switch] $ProtocolLogs,

    [string] $FrontEndProtocolLogPath,

    [string] $HubProtocolLogPath
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

# Checked before anything changes: a folder given without the step would silently do nothing.
if (($FrontEndProtocolLogPath -or $HubProtocolLogPath) -and -not $ProtocolLogs) {
    throw '-FrontEndProtocolLogPath and -HubProtocolLogPath go with -ProtocolLogs.'
}

# Well-known SIDs: the same on every Windows language, unlike the group names.
$EventLogReaders = 'S-1-5-32-573'
$RemoteManagementUsers = 'S-1-5-32-580'
# GENERIC_READ (0x80000000) | GENERIC_EXECUTE (0x20000000), as the signed 32-bit mask .NET takes.
$ReadAndExecute = -1610612736
$RootSddlPath = 'WSMan:\localhost\Service\RootSDDL'

# Adding is tried and "already a member" taken as done: comparing names would miss a UPN or
# another spelling of the account, and Get-LocalGroupMember fails on groups holding orphaned SIDs.
foreach ($groupSid in @($EventLogReaders, $RemoteManagementUsers)) {
    $group = Get-LocalGroup -SID $groupSid
    if ($PSCmdlet.ShouldProcess($group.Name, "Add member $Account")) {
        try {
            Add-LocalGroupMember -SID $groupSid -Member $Account
            Write-Output "Added $Account to $($group.Name)."
        }
        catch [Microsoft.PowerShell.Commands.MemberExistsException] {
            Write-Output "$Account is already in $($group.Name)."
        }
    }
}

$before = (Get-Item -Path $RootSddlPath).Value
Write-Output "RootSDDL before: $before"

$descriptor = New-Object -TypeName System.Security.AccessControl.CommonSecurityDescriptor -ArgumentList $false, $false, $before
$sid = New-Object -TypeName System.Security.Principal.SecurityIdentifier -ArgumentList $RemoteManagementUsers
$granted = @($descriptor.DiscretionaryAcl | Where-Object {
        $_.SecurityIdentifier -eq $sid -and
        $_.AceQualifier -eq 'AccessAllowed' -and
        ($_.AccessMask -band $ReadAndExecute) -eq $ReadAndExecute
    })

if ($granted.Count -gt 0) {
    Write-Output 'Remote Management Users already have Read and Execute in RootSDDL.'
}
else {
    $descriptor.DiscretionaryAcl.AddAccess('Allow', $sid, $ReadAndExecute, 'None', 'None')
    $wanted = $descriptor.GetSddlForm('All')
    if ($PSCmdlet.ShouldProcess($RootSddlPath, "Set to $wanted")) {
        Set-Item -Path $RootSddlPath -Value $wanted -Force
    }
    else {
        Write-Output "RootSDDL would be: $wanted"
    }
}

Write-Output "RootSDDL after:  $((Get-Item -Path $RootSddlPath).Value)"

if (-not $ProtocolLogs) {
    return
}

# Step 4. Read and Execute (list the folder, read its files) on the folder itself and, by
# inheritance, on the files in it (ObjectInherit, no propagation flag); nothing for subfolders.
# Only the access list is read and written (GetAccessControl('Access')): the owner and the
# audit entries stay as they are. Entries are compared by SID: an account's name has more than
# one spelling (a UPN, another case).
$FileReadAndExecute = [System.Security.AccessControl.FileSystemRights]::ReadAndExecute
$ObjectInherit = [System.Security.AccessControl.InheritanceFlags]::ObjectInherit
$InheritOnly = [System.Security.AccessControl.PropagationFlags]::InheritOnly
$accountName = New-Object -TypeName System.Security.Principal.NTAccount -ArgumentList $Account
$accountSid = $accountName.Translate([System.Security.Principal.SecurityIdentifier])
$installPath = [Environment]::GetEnvironmentVariable('ExchangeInstallPath', 'Machine')
$given = @{ FrontEnd = $FrontEndProtocolLogPath; Hub = $HubProtocolLogPath }

foreach ($role in @('FrontEnd', 'Hub')) {
    $folder = $given[$role]
    if (-not $folder) {
        if (-not $installPath) {
            Write-Warning "ExchangeInstallPath is not set on this computer: give the $role folder with -$($role)ProtocolLogPath."
            continue
        }
        $folder = $installPath.TrimEnd('\') + "\TransportRoles\Logs\$role\ProtocolLog\SmtpReceive"
    }
    if (-not (Test-Path -LiteralPath $folder -PathType Container)) {
        Write-Warning "The $role protocol log folder $folder does not exist; skipped."
        continue
    }
    $item = Get-Item -LiteralPath $folder
    $acl = $item.GetAccessControl('Access')
    $rules = @($acl.GetAccessRules($true, $true, [System.Security.Principal.SecurityIdentifier]) |
        Where-Object { $_.IdentityReference -eq $accountSid })
    # A Deny entry wins over any grant: say so, change nothing about it.
    foreach ($deny in @($rules | Where-Object { $_.AccessControlType -eq 'Deny' })) {
        Write-Warning "$folder has a Deny entry for $Account ($($deny.FileSystemRights)); it wins over a grant."
    }
    $granted = @($rules | Where-Object {
            $_.AccessControlType -eq 'Allow' -and
            ($_.FileSystemRights -band $FileReadAndExecute) -eq $FileReadAndExecute -and
            ($_.InheritanceFlags -band $ObjectInherit) -eq $ObjectInherit -and
            ($_.PropagationFlags -band $InheritOnly) -ne $InheritOnly
        })
    if ($granted.Count -gt 0) {
        Write-Output "$Account already has Read and Execute on $folder and its files."
    }
    elseif ($PSCmdlet.ShouldProcess($folder, "Grant $Account Read and Execute on the folder and its files")) {
        $rule = New-Object -TypeName System.Security.AccessControl.FileSystemAccessRule -ArgumentList $accountSid, $FileReadAndExecute, $ObjectInherit, 'None', 'Allow'
        $acl.AddAccessRule($rule)
        $item.SetAccessControl($acl)
        Write-Output "Granted $Account Read and Execute on $folder and its files."
    }
}
